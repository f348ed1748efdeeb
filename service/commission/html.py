"""The commissioning report as one self-contained HTML file: inline CSS, PNG figures embedded as base64 data URIs,
no external resource (a Content-Security-Policy forbids any), so it opens offline and can be filed as it is."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
STYLE = """
body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.4em;display:block;overflow-x:auto}
td,th{border:1px solid #bbb;padding:3px 7px;font-size:13px}
th{background:#eee}.pass{color:#0a6e0a;font-weight:bold}.fail{color:#b00;font-weight:bold}
.incomplete,.not{color:#a60;font-weight:bold}.verdict{font-size:1.4em;padding:0.4em 0.8em;border:2px solid #888;
display:inline-block}figure{display:inline-block;margin:0.4em}figcaption{font-size:12px}
"""
# counts the figures that decoded (read by the headless-browser test); changes nothing else
SCRIPT = (
    "window.addEventListener('load',function(){var n=0;for(var i of document.images){if(i.complete&&"
    "i.naturalWidth>0)n++;}document.body.setAttribute('data-images-loaded',n);});"
)


def _e(x: object) -> str:
    return html.escape(str(x))


def _num(v: object, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{nd}f}" if isinstance(v, float) else _e(v)


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(summary: dict, rows: list[dict], figures: dict[str, bytes], overlays: list[tuple[str, bytes]]) -> str:
    v = summary["verdict"]
    parts = [
        f"<h1>Commissioning report: {_e(summary['model'])}</h1>",
        f"<p>Data: <code>{_e(summary['data_dir'])}</code>; {summary['n_patients']} patients, {summary['n_glands']} "
        f"glands evaluated; {len(summary['failed'])} failed. Generated {_e(summary['generated_utc'])} UTC by "
        f"parotid-seg {_e(summary['tool_version'])}. Research use only.</p>",
        f'<p class="verdict">Acceptance verdict: <span class="{_e(v["result"])}">{_e(v["result"].upper())}</span></p>',
        "<h2>Acceptance criteria</h2>",
        _table(
            ["criterion", "what", "limit", "measured", "result"],
            [
                [
                    _e(c["criterion"]),
                    _e(c["what"]),
                    _num(c["limit"]),
                    _num(c["value"]),
                    f'<span class="{_e(c["result"].split()[0])}">{_e(c["result"])}</span>',
                ]
                for c in v["checks"]
            ],
        ),  # fmt: skip
        "<h2>Per gland (medians over patients)</h2>",
    ]
    keys = ["n", "dice_median", "surface_dice_2mm_median", "surface_dice_3mm_median", "hd95_mm_median",
            "hd95_pooled_mm_median", "msd_mm_median", "volume_error_pct_median", "mean_dose_ref_gy_median",
            "abs_mean_dose_diff_gy_median", "abs_d50_diff_gy_median"]  # fmt: skip
    parts.append(
        _table(["gland", *keys], [[_e(g), *(_num(s.get(k)) for k in keys)] for g, s in summary["per_gland"].items()])
    )
    parts.append(f"<p>HD95: {_e(summary['hd95_definition'])}. Surface Dice counts surface voxels within 2 / 3 mm.</p>")
    parts.append("<h2>Strata (both glands pooled)</h2>")
    for title, bands in summary["strata"].items():
        skeys = [
            "n",
            "dice_median",
            "surface_dice_2mm_median",
            "volume_error_pct_median",
            "abs_mean_dose_diff_gy_median",
        ]
        parts.append(f"<h3>By {_e(title)}</h3>")
        parts.append(_table([title, *skeys], [[_e(b), *(_num(s.get(k)) for k in skeys)] for b, s in bands.items()]))
    parts.append("<h2>Agreement</h2>")
    for name, png in figures.items():
        parts.append(f"<figure>{img(png, name)}<figcaption>{_e(name)}</figcaption></figure>")
    if summary["failed"]:
        parts.append("<h2>Patients that failed</h2>")
        parts.append(_table(["patient", "error"], [[_e(p), _e(m)] for p, m in summary["failed"].items()]))
    parts.append("<h2>Per patient</h2>")
    cols = ["patient", "gland", "dice", "surface_dice_2mm", "hd95_mm", "hd95_pooled_mm", "ref_cc", "pred_cc",
            "volume_error_pct", "anterior_shortfall_mm", "mean_dose_ref_gy", "mean_dose_pred_gy", "mean_dose_diff_gy",
            "slice_thickness_mm", "ref_mean_hu", "qa_status"]  # fmt: skip
    parts.append(_table(cols, [[_num(r.get(c), 2) for c in cols] for r in rows]))
    parts.append("<h2>Where automatic and reference contours differ most</h2>")
    for caption, png in overlays:
        parts.append(f"<figure>{img(png, caption)}<figcaption>{_e(caption)}</figcaption></figure>")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>Commissioning report: {_e(summary['model'])}</title><style>{STYLE}</style>"
        f"<script>{SCRIPT}</script></head><body>" + "\n".join(parts) + "</body></html>\n"
    )


def write_html(text: str, path: Path) -> None:
    from service.fileio import default_file_mode, write_atomic

    write_atomic(path, text.encode("utf-8"), mode=default_file_mode())
