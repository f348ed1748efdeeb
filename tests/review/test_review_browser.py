"""The review workstation in a real browser (headless Chromium, WebGL2 through SwiftShader, selenium), against
the real API (uvicorn, embedded workers, the oracle bundle: known masks) and a real DICOM listener whose peer is
configured "review before send", returning to a DCMTK storescp:

sign in, upload a zip, follow the job, open the case, read the viewer's pixels where each gland's mask lies on
the shown slice, paint a region and save it as a revision, approve; a DICOM job's RTSTRUCT reaches storescp only
after approval (with the confirmation naming the destination) and a rejected one never; no request leaves the
service (external host names do not resolve in this browser)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from service.config import hash_api_key
from tests.bundle_factory import oracle_phantom
from tests.listener.conftest import StoreSCP, storescu
from tests.review.browser import (
    ThreadedServer,
    axial_tile,
    colour_class,
    fit_image,
    screenshot_rgb,
    start_chrome,
    voxel_centre_px,
    wait_until,
)
from tests.service.conftest import (
    KEY_ALICE,
    SERIES_SHAPE_ZYX,
    SERIES_SPACING_MM_ZYX,
    key_entries,
    make_settings,
    write_phantom_series,
)
from tests.support.net import free_port

pytestmark = pytest.mark.slow
KEY_SCANNER = "scanner-review-key-0123456789"
SCANNER_AE = "SCANNER"


@pytest.fixture
def stack(tmp_path: Path, model_store: Path):
    """API + listener (one job service) + storescp for the review-before-send peer + Chromium."""
    from service.api.app import create_app
    from service.listener.jobs import ServiceJobBackend
    from service.listener.listener import Listener
    from service.listener.settings import load_settings

    keys = f"{key_entries()},dicom:{SCANNER_AE}={hash_api_key(KEY_SCANNER)}"
    app = create_app(make_settings(tmp_path / "jobs", model_store, api_keys=keys))
    server = ThreadedServer(app, free_port()).start()
    scp = StoreSCP("PLANNING", free_port(), tmp_path / "received").start()
    listener = Listener(
        load_settings(
            spool_dir=tmp_path / "spool",
            port=0,
            bind_host="127.0.0.1",
            quiet_time_s=1.0,
            release_grace_s=0.3,
            poll_interval_s=0.2,
            delivery_backoff_s=0.5,
            delivery_timeout_s=5.0,
            peers=[
                {
                    "ae_title": SCANNER_AE,
                    "return_mode": "fixed",
                    "return_host": "127.0.0.1",
                    "return_port": scp.port,
                    "return_ae_title": "PLANNING",
                    "review_before_send": True,
                }
            ],
        ),
        ServiceJobBackend(app.state.jobs),
    ).start(port=0)
    driver = start_chrome()
    driver.implicitly_wait(0)
    try:
        yield server, listener, scp, driver, app
    finally:
        driver.quit()
        listener.stop()
        scp.stop()
        server.stop()


def _sign_in(driver, url: str, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/ui/")
    if driver.find_elements(By.ID, "signout") and driver.find_element(By.ID, "signout").is_displayed():
        driver.find_element(By.ID, "signout").click()
    box = wait_until(
        lambda: driver.find_element(By.ID, "api-key").is_displayed() and driver.find_element(By.ID, "api-key"),
        10,
        "sign-in form",
    )
    box.clear()
    box.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    wait_until(lambda: driver.find_element(By.ID, "list-view").is_displayed(), 10, "the job list")


def _open_first_succeeded(driver) -> str:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def click_row() -> str | None:
        rows = driver.find_elements(By.CSS_SELECTOR, "tr.job[data-state=succeeded]")
        try:  # the list refreshes while jobs run: a row found a moment ago may have been redrawn
            job_id = rows[0].get_attribute("data-id") if rows else None
            if job_id:
                rows[0].click()
            return job_id
        except StaleElementReferenceException:
            return None

    job_id = wait_until(click_row, 120, "a succeeded job")
    wait_until(lambda: driver.execute_script("return window.reviewApp.ready === true"), 60, "the viewer")
    time.sleep(0.5)  # one more frame
    return job_id


def _confirm(driver, expect: str) -> str:
    from selenium.webdriver.common.by import By

    dialog = wait_until(lambda: driver.find_element(By.ID, "confirm").is_displayed(), 10, "the confirmation")
    assert dialog
    text = driver.find_element(By.ID, "confirm-text").text
    assert expect in text, text
    driver.find_element(By.ID, "confirm-ok").click()
    return text


def _decide(driver, button: str, expect: str) -> str:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "reviewer").send_keys("Dr Test Reviewer")
    driver.find_element(By.ID, "comment").send_keys("looks right")
    driver.find_element(By.ID, button).click()
    text = _confirm(driver, expect)
    wait_until(lambda: driver.find_element(By.ID, "decision").get_attribute("data-decision"), 10, "the decision")
    return text


def test_review_correct_approve_and_send(stack, tmp_path: Path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    server, listener, scp, driver, app = stack
    series = write_phantom_series(tmp_path / "ct-http")
    zip_path = tmp_path / "series.zip"
    zip_path.write_bytes(series.zip_bytes())

    # --- a wrong key is refused on the sign-in page; then sign in, upload a zip, follow the job, open the case
    driver.get(f"{server.url}/")  # redirected to /ui/
    driver.find_element(By.ID, "api-key").send_keys("not-a-key")
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    wait_until(lambda: "not known" in driver.find_element(By.ID, "signin-error").text, 10, "the refusal")
    assert driver.execute_script("return sessionStorage.length") == 0 and driver.get_cookies() == []
    driver.get_log("browser")  # drain: the refused key's 401 is expected, any later console error is not
    _sign_in(driver, server.url, KEY_ALICE)
    assert driver.get_cookies() == []  # the key lives in sessionStorage only; no cookies at all
    driver.find_element(By.ID, "pick-files").send_keys(str(zip_path))
    job_id = _open_first_succeeded(driver)
    assert series.folder.name  # the series id is on screen
    uid = str(pydicom.dcmread(series.files[0], stop_before_pixels=True).SeriesInstanceUID)
    assert uid in driver.find_element(By.ID, "series-id").text

    # --- the shown axial slice: each gland's colour where its mask is, neither colour elsewhere in the body
    review = app.state.jobs.store.job_path(job_id)
    _, masks = oracle_phantom(SERIES_SHAPE_ZYX)
    glands = {g["name"]: g for g in driver.execute_script("return window.reviewApp.review.glands")}
    tile = fit_image(axial_tile(driver), SERIES_SHAPE_ZYX, SERIES_SPACING_MM_ZYX)
    k = tile[4]
    assert all(masks[n][k].any() for n in masks), f"slice {k} should cross both glands"
    driver.execute_script("window.reviewApp.viewer.nv.setCrosshairWidth(0)")  # the crosshair crosses the glands
    time.sleep(0.3)
    shot = screenshot_rgb(driver)
    seen = {}
    for name, mask in masks.items():
        inside = ndimage.binary_erosion(mask[k])  # voxel centres away from the blended edge
        pixels = np.array(
            [
                shot[y, x]
                for y, x in (voxel_centre_px(tile, i, j, SERIES_SHAPE_ZYX)[::-1] for j, i in np.argwhere(inside))
            ]
        )
        seen[name] = colour_class(pixels, tuple(glands[name]["color"])).mean()
    body_only = ndimage.binary_erosion(~(masks["Parotid_L"][k] | masks["Parotid_R"][k]), iterations=2)
    body_only[:, :16] = body_only[:, -16:] = False  # stay inside the phantom's body
    body_only[:16, :] = body_only[-16:, :] = False
    others = np.array(
        [
            shot[y, x]
            for y, x in (voxel_centre_px(tile, i, j, SERIES_SHAPE_ZYX)[::-1] for j, i in np.argwhere(body_only))
        ]
    )
    assert seen["Parotid_L"] > 0.95 and seen["Parotid_R"] > 0.95, seen
    for name in masks:
        assert colour_class(others, tuple(glands[name]["color"])).mean() < 0.01, name
    # toggling a structure off removes its colour
    driver.find_element(By.CSS_SELECTOR, f"#structures input[data-label='{glands['Parotid_R']['label']}']").click()
    time.sleep(0.5)
    shot_off = screenshot_rgb(driver)
    j, i = np.argwhere(ndimage.binary_erosion(masks["Parotid_R"][k]))[0]
    x, y = voxel_centre_px(tile, i, j, SERIES_SHAPE_ZYX)
    assert not colour_class(shot_off[y, x][None], tuple(glands["Parotid_R"]["color"]))[0]
    driver.find_element(By.CSS_SELECTOR, f"#structures input[data-label='{glands['Parotid_R']['label']}']").click()

    # --- paint a stroke of Parotid_L in front of the glands (rows 12-13, columns 26-38) and save it as a revision
    Select(driver.find_element(By.ID, "pen-structure")).select_by_visible_text("Parotid_L")
    driver.find_element(By.CSS_SELECTOR, "[data-tool=paint]").click()
    canvas = driver.find_element(By.ID, "gl")
    rect = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", canvas)
    x0, y0 = voxel_centre_px(tile, 26, 12, SERIES_SHAPE_ZYX)
    x1, _ = voxel_centre_px(tile, 38, 12, SERIES_SHAPE_ZYX)
    cx, cy = rect["left"] + rect["width"] / 2, rect["top"] + rect["height"] / 2
    chain = ActionChains(driver).move_to_element_with_offset(canvas, int(x0 - cx), int(y0 - cy)).click_and_hold()
    for _ in range(12):
        chain.move_by_offset(int((x1 - x0) / 12), 0)
    chain.release().perform()
    driver.find_element(By.ID, "save-revision").click()
    wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#revisions [data-revision='1']"), 20, "revision 1")
    from service.review.nifti import read_nifti_zyx
    from service.review.store import ReviewCase

    case = ReviewCase(review, job_id)
    rev = case.revision(1)
    assert rev.edited == ["Parotid_L"] and rev.voxels_added["Parotid_L"] > 10 and rev.voxels_removed["Parotid_L"] == 0
    labels = read_nifti_zyx(case.masks_path(1))
    added = np.argwhere((labels == glands["Parotid_L"]["label"]) & ~masks["Parotid_L"])
    assert set(added[:, 0]) == {k}, "painted on the shown slice only"
    assert added[:, 1].min() >= 10 and added[:, 1].max() <= 15, added[:, 1]
    assert added[:, 2].min() >= 24 and added[:, 2].max() <= 40, added[:, 2]
    assert pydicom.dcmread(case.rtstruct_path(1)).StructureSetROISequence  # a real RTSTRUCT revision

    # --- keyboard shortcuts: views, slices, window presets, zoom
    from selenium.webdriver.common.keys import Keys

    nv_state = (
        "const nv = window.reviewApp.viewer.nv; return [nv.opts.sliceType, nv.frac2vox(nv.scene.crosshairPos)[2], "
        "nv.volumes[0].cal_min, nv.scene.pan2Dxyzmm[3]]"
    )
    before = driver.execute_script(nv_state)
    ActionChains(driver).send_keys("c").perform()
    assert driver.execute_script(nv_state)[0] == 1  # coronal
    ActionChains(driver).send_keys("a", Keys.ARROW_UP, Keys.ARROW_UP, "2", "+").perform()
    after = driver.execute_script(nv_state)
    assert after[0] == 0 and after[1] == before[1] + 2 and after[2] == -600 and after[3] == pytest.approx(1.5)
    ActionChains(driver).send_keys("1", "0").perform()
    assert driver.execute_script(nv_state)[2:] == [-160, 1]

    # --- the QA stage's uncertainty map as an overlay
    driver.find_element(By.CSS_SELECTOR, "#overlays input[data-overlay=uncertainty]").click()
    wait_until(lambda: driver.execute_script("return window.reviewApp.viewer.nv.volumes.length") == 2, 20, "overlay")

    # --- approve (an HTTP job: nothing is sent, and the confirmation says so)
    _decide(driver, "approve", "Nothing is sent")
    assert case.decision().decision == "approved" and case.decision().revision == 1

    # --- a DICOM job from a review-before-send peer: held until approval, then sent to storescp
    dicom_series = write_phantom_series(tmp_path / "ct-dicom")
    sent = storescu(listener.port, dicom_series.files, calling_ae=SCANNER_AE)
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: listener.holds.held(), 120, "the held job")
    _sign_in(driver, server.url, KEY_SCANNER)
    held_id = _open_first_succeeded(driver)
    assert held_id == listener.holds.held()[0]
    time.sleep(1.0)
    assert scp.received() == [], "nothing may be delivered before approval"
    text = _decide(driver, "approve", f"PLANNING@127.0.0.1:{scp.port}")
    assert "sent to" in text
    delivered = wait_until(scp.received, 30, "the RTSTRUCT at storescp")
    ds = pydicom.dcmread(delivered[0])
    held_case = ReviewCase(app.state.jobs.store.job_path(held_id), held_id)
    assert ds.Modality == "RTSTRUCT" and ds.SOPInstanceUID == held_case.revision(0).sop_instance_uid

    # --- a rejected DICOM job is never delivered
    rejected_series = write_phantom_series(tmp_path / "ct-rejected")
    sent = storescu(listener.port, rejected_series.files, calling_ae=SCANNER_AE)
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: listener.holds.held(), 120, "the second held job")
    rejected_id = listener.holds.held()[0]
    driver.get(f"{server.url}/ui/#/case/{rejected_id}")
    wait_until(lambda: driver.execute_script("return window.reviewApp.ready === true"), 60, "the viewer")
    _decide(driver, "reject", "never be delivered")
    wait_until(lambda: not listener.holds.held(), 20, "the hold to be dropped")
    assert [r["job_id"] for r in listener.audit.read() if r["event"] == "delivery_withheld"] == [rejected_id]
    time.sleep(1.5)
    assert len(scp.received()) == 1, "a rejected result must never be delivered"

    # --- every request the page made went to the service itself; no console errors but the favicon
    resources = driver.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
    assert resources and all(r.startswith(server.url) for r in resources), resources
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
    assert not errors, errors
