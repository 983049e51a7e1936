// Artifact pieces shared by the job and compare pages: the table with download buttons, and images
// fetched with the key and shown from blob: URLs.

import { fmtBytes, h, saveBlob, table } from "./dom.js";

// fetchBlob(name) -> Promise<Blob>; toast(message, kind) for failures.
export function artifactTable(list, { fetchBlob, toast, empty }) {
  async function download(name, button) {
    button.disabled = true;
    try {
      saveBlob(await fetchBlob(name), name);
    } catch (err) {
      toast(`Download of ${name} failed: ${err.message}`, "error");
    } finally {
      button.disabled = false;
    }
  }
  return table([
    { title: "Name", cell: (a) => a.name, class: "mono" },
    { title: "Size", cell: (a) => fmtBytes(a.size), class: "num" },
    { title: "sha256", cell: (a) => h("span", { title: a.sha256, class: "mono muted" }, String(a.sha256 || "").slice(0, 12)) },
    { title: "", cell: (a) => {
      const b = h("button", { type: "button", class: "small", dataset: { download: a.name } }, "Download");
      b.addEventListener("click", () => download(a.name, b));
      return b;
    } },
  ], list, { empty });
}

// An <img> whose PNG is fetched with the key; its object URL is pushed on `urls` (revoke on leave).
export function blobImage(fetchBlob, name, { urls, alive, attrs = {} }) {
  const img = h("img", { alt: name, ...attrs });
  fetchBlob(name).then((blob) => {
    if (!alive()) return;
    const url = URL.createObjectURL(new Blob([blob], { type: "image/png" }));
    urls.push(url);
    img.src = url;
  }).catch((err) => img.replaceWith(h("p", { class: "error" }, `${name}: ${err.message}`)));
  return img;
}
