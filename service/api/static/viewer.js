// The case viewer: NiiVue (vendored, WebGL2) with the CT as the base volume and the structures as NiiVue's
// drawing layer (a label map: value = structure label), so paint / erase / fill edit them directly. The NIfTI
// files are written in RAS voxel order by the service, which is NiiVue's internal order: the drawing bitmap is
// the file's voxel order and is saved back without resampling.
import { Niivue, NVImage, SLICE_TYPE } from "./vendor/niivue/niivue.js";
import { authHeaders, fetchBytes } from "./api.js";

export const WINDOWS = { soft: [-160, 240], bone: [-600, 1400] }; // W400/L40, W2000/L400 (HU)

export class CaseViewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.nv = new Niivue({
      backColor: [0, 0, 0, 1],
      isRadiologicalConvention: true, // patient's right on the screen's left, as planning systems show it
      dragAndDropEnabled: false,
      show3Dcrosshair: false,
      crosshairColor: [1, 1, 0, 0.4],
      crosshairWidth: 1,
      isColorbar: false,
      logLevel: "error",
      penSize: 3,
      isNearestInterpolation: false,
    });
    this.glands = [];
    this.hidden = new Set();
    this.opacity = 0.5;
    this.overlays = {};
  }

  async open(review) {
    this.review = review;
    this.glands = review.glands;
    await this.nv.attachToCanvas(this.canvas);
    const [lo, hi] = WINDOWS.soft;
    const ct = await this._image(review.files.ct, "ct.nii.gz", { colormap: "gray", cal_min: lo, cal_max: hi, trustCalMinMax: true });
    this.nv.addVolume(ct);
    await this.loadMasks(review.files.masks);
    this.setView("axial");
    this.setOpacity(this.opacity);
    this.centreOnStructures();
  }

  // put the crosshair at the centre of the structures' voxels (the slices worth looking at first)
  centreOnStructures() {
    const bmp = this.nv.drawBitmap, dims = this.nv.back.dims; // dims: [ndim, nx, ny, nz]
    if (!bmp) return;
    const nx = dims[1], ny = dims[2];
    let n = 0, sx = 0, sy = 0, sz = 0;
    for (let v = 0; v < bmp.length; v++) {
      if (bmp[v] === 0) continue;
      n++; sx += v % nx; sy += Math.floor(v / nx) % ny; sz += Math.floor(v / (nx * ny));
    }
    if (n) this.setCrosshairVoxel([Math.round(sx / n), Math.round(sy / n), Math.round(sz / n)]);
  }

  // zoom the 2D views about the crosshair (1 = the whole field of view)
  setZoom(zoom) {
    const p = this.nv.scene.pan2Dxyzmm;
    zoom = Math.min(Math.max(zoom, 1), 10);
    this.nv.setCrosshairWidth(1 / zoom); // NiiVue scales the crosshair with the zoom
    if (zoom === 1) { this.nv.setPan2Dxyzmm([0, 0, 0, 1]); return; }
    const mm = this.nv.frac2mm(this.nv.scene.crosshairPos);
    const dz = p[3] - zoom;
    this.nv.setPan2Dxyzmm([p[0] + dz * mm[0], p[1] + dz * mm[1], p[2] + dz * mm[2], zoom]);
  }

  get zoom() { return this.nv.scene.pan2Dxyzmm[3]; }

  async _image(url, name, opts = {}) {
    const buffer = await fetchBytes(url);
    return NVImage.loadFromUrl({ url: name, name, buffer, ...opts });
  }

  async loadMasks(url) {
    const masks = await this._image(url, "masks.nii.gz");
    if (!this.nv.loadDrawing(masks)) throw new Error("the masks do not match the CT grid");
    this._applyColors();
    this.dirty = false;
  }

  // reference: a label map (1, 2, ...); uncertainty: 0 (sure) .. 1, shown from 0.05 up
  async addOverlay(kind, url, colormap) {
    if (this.overlays[kind]) return;
    const [lo, hi] = kind === "uncertainty" ? [0.05, 1] : [0.5, 2];
    const img = await this._image(url, `${kind}.nii.gz`, { colormap, opacity: 0.5, cal_min: lo, cal_max: hi, trustCalMinMax: true });
    this.nv.addVolume(img);
    this.overlays[kind] = img;
  }

  showOverlay(kind, on) {
    const img = this.overlays[kind];
    if (!img) return;
    img.opacity = on ? 0.5 : 0;
    this.nv.updateGLVolume();
  }

  _applyColors() {
    const R = [0], G = [0], B = [0], A = [0], I = [0];
    for (const g of this.glands) {
      R.push(g.color[0]); G.push(g.color[1]); B.push(g.color[2]);
      A.push(this.hidden.has(g.label) ? 0 : 255); I.push(g.label);
    }
    this.nv.setDrawColormap({ R, G, B, A, I, labels: ["", ...this.glands.map((g) => g.name)] });
  }

  setView(view) {
    const t = { axial: SLICE_TYPE.AXIAL, coronal: SLICE_TYPE.CORONAL, sagittal: SLICE_TYPE.SAGITTAL, multi: SLICE_TYPE.MULTIPLANAR }[view];
    this.view = view;
    this.nv.setSliceType(t);
  }

  setWindow(name) {
    const [lo, hi] = WINDOWS[name];
    const ct = this.nv.volumes[0];
    ct.cal_min = lo; ct.cal_max = hi;
    this.nv.updateGLVolume();
  }

  setOpacity(value) {
    this.opacity = value;
    this.nv.setDrawOpacity(value);
  }

  toggleStructure(label, on) {
    if (on) this.hidden.delete(label); else this.hidden.add(label);
    this._applyColors();
  }

  // tool: none | paint | erase | fill; label: the structure being edited
  setTool(tool, label) {
    this.tool = tool;
    if (tool === "none") { this.nv.setDrawingEnabled(false); return; }
    this.nv.setDrawingEnabled(true);
    if (tool === "erase") this.nv.setPenValue(0, false);
    else this.nv.setPenValue(label, tool === "fill");
    this.dirty = true;
  }

  undo() { this.nv.drawUndo(); }

  // step the current view's slice (axial: superior +1)
  step(delta) {
    const d = { axial: [0, 0, delta], coronal: [0, delta, 0], sagittal: [delta, 0, 0], multi: [0, 0, delta] }[this.view];
    this.nv.moveCrosshairInVox(...d);
  }

  // voxel (RAS order i', j', k) at the crosshair
  crosshairVoxel() { return this.nv.frac2vox(this.nv.scene.crosshairPos); }

  setCrosshairVoxel(ijk) {
    const cur = this.crosshairVoxel();
    this.nv.moveCrosshairInVox(ijk[0] - cur[0], ijk[1] - cur[1], ijk[2] - cur[2]);
  }

  // the drawing as a NIfTI file (the CT's header, uint8 labels): what POST .../revisions takes
  async drawingNifti() {
    const bytes = await this.nv.saveImage({ filename: "", isSaveDrawing: true });
    if (!bytes || bytes === true) throw new Error("the viewer returned no drawing");
    return bytes;
  }
}

export { authHeaders };
