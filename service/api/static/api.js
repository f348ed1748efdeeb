// The API client of the review page: the key lives in sessionStorage (this tab only) and goes out as the
// Bearer header; no cookies are used, so other sites cannot make requests on the user's behalf.
const KEY = "parotid-seg.api-key";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

export function authHeaders() {
  return session.key ? { Authorization: `Bearer ${session.key}` } : {};
}

async function failure(r) {
  let err = null;
  try { err = (await r.json()).error; } catch (_) { /* not JSON */ }
  return new ApiError(r.status, err?.code || `HTTP_${r.status}`, err?.message || r.statusText);
}

export async function api(path, { method = "GET", json, body, raw = false } = {}) {
  const headers = authHeaders();
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  const r = await fetch(path, { method, headers, body, credentials: "omit", cache: "no-store" });
  if (!r.ok) throw await failure(r);
  return raw ? r : r.json();
}

export async function fetchBytes(path) {
  const r = await fetch(path, { headers: authHeaders(), credentials: "omit" });
  if (!r.ok) throw await failure(r);
  return r.arrayBuffer();
}

// POST /v1/jobs with progress (fetch has no upload progress, XMLHttpRequest does).
export function uploadSeries(files, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const f of files) form.append("files", f, f.relPath || f.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/jobs");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onerror = () => reject(new ApiError(0, "NETWORK", "the upload did not reach the service"));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body?.error?.code || `HTTP_${xhr.status}`, body?.error?.message || xhr.statusText));
    };
    xhr.send(form);
  });
}

// Files of a drop: folders are walked (webkitGetAsEntry), so a dropped DICOM folder uploads every file in it.
export async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return [...dataTransfer.files];
  const out = [];
  async function walk(entry, prefix) {
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      file.relPath = prefix + file.name;
      out.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const e of batch) await walk(e, `${prefix}${entry.name}/`);
      }
    }
  }
  for (const e of entries) await walk(e, "");
  return out;
}
