// The compare jobs list: newest first, "load more" pages (cursor `after`), refreshed every few seconds.

import { api, collectPages } from "./api.js";
import { fmtTime, h, statusBadge, table } from "./dom.js";

const REFRESH_MS = 3000;

export function metadataText(config) {
  const md = (config && config.metadata) || {};
  return Object.entries(md).map(([k, v]) => `${k}: ${v}`).join("; ");
}

// Children ended / total, with a bar.
export function childrenProgress(compare, id) {
  const p = compare.progress || {};
  const bar = h("progress", { max: "1", id });
  bar.value = typeof p.fraction === "number" ? Math.min(Math.max(p.fraction, 0), 1) : 0;
  return h("span", { class: "children-progress" }, bar, h("span", { class: "count" }, `${p.ended ?? 0} / ${p.children ?? 0}`));
}

export const COMPARE_COLUMNS = [
  { title: "Compare", cell: (c) => h("a", { href: `#/compare/${encodeURIComponent(c.id)}`, class: "mono" }, c.id) },
  { title: "Status", cell: (c) => statusBadge(c.status) },
  { title: "Arms", cell: (c) => h("span", { title: (c.arms || []).map((a) => a.name).join("\n") }, String((c.arms || []).length)),
    class: "num" },
  { title: "Children ended", cell: (c) => childrenProgress(c), class: "progress-cell" },
  { title: "Winner", cell: (c) => (c.winner ? c.winner.arm : ""), class: "winner" },
  { title: "Metadata", cell: (c) => metadataText(c.config), class: "metadata" },
  { title: "Created", cell: (c) => fmtTime(c.created_at) },
];

export const comparesView = {
  nav: "compare",
  title: "compare jobs",
  render(main) {
    let pages = 1;
    let timer = null;
    let alive = true;
    const holder = h("div", { id: "compares-table", class: "list-table" }, h("p", { class: "muted" }, "Loading…"));
    const more = h("button", { type: "button", hidden: true }, "Load more");
    more.addEventListener("click", () => {
      pages += 1;
      load();
    });
    const updated = h("span", { class: "muted small" });
    main.append(
      h("div", { class: "page-head" },
        h("h1", {}, "Compare jobs"),
        h("div", { class: "row" }, h("a", { href: "#/compare/new", class: "button primary", id: "new-compare" },
          "New compare job"))),
      holder, h("div", { class: "row between" }, more, updated));

    async function load() {
      clearTimeout(timer);
      try {
        const { rows, hasMore } = await collectPages((cursor) => api.compares(cursor), pages);
        if (!alive) return;
        holder.replaceChildren(table(COMPARE_COLUMNS, rows, {
          empty: "No compare jobs yet: submit one with New compare job.",
          rowAttrs: (c) => ({ dataset: { compareId: c.id, status: c.status } }),
        }));
        more.hidden = !hasMore;
        updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
      } catch (err) {
        if (!alive) return;
        if (err.status !== 401) holder.replaceChildren(h("p", { class: "error" }, `Could not load compare jobs: ${err.message}`));
      }
      if (alive) timer = setTimeout(load, REFRESH_MS);
    }
    load();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  },
};
