// The jobs list: newest first, a status filter, "load more" pages, refreshed every few seconds.

import { api, collectPages } from "./api.js";
import { fmtTime, h, statusBadge, table } from "./dom.js";

const STATUSES = ["", "queued", "running", "cancelling", "succeeded", "failed", "cancelled"];
const REFRESH_MS = 3000;

export function progressText(job) {
  const p = job.progress || {};
  if (!p.stage || !["running", "cancelling"].includes(job.status)) return "";
  let text = p.stage;
  if (typeof p.fraction === "number") text += ` ${Math.round(p.fraction * 100)}%`;
  return text;
}

function metadataText(job) {
  const md = (job.config && job.config.metadata) || {};
  return Object.entries(md).map(([k, v]) => `${k}: ${v}`).join("; ");
}

// Column specs for a job table; another list (e.g. compare) can pick from or extend these.
export const JOB_COLUMNS = [
  { title: "Job", cell: (j) => h("a", { href: `#/jobs/${encodeURIComponent(j.id)}`, class: "mono" }, j.id) },
  { title: "Status", cell: (j) => statusBadge(j.status) },
  { title: "Model", cell: (j) => (j.config && j.config.model && j.config.model.arch) || "" },
  { title: "Activation", cell: (j) => (j.config && j.config.activation) || "" },
  { title: "Dataset", cell: (j) => (j.config && j.config.dataset && j.config.dataset.uri) || "" },
  { title: "Progress", cell: progressText },
  { title: "Metadata", cell: metadataText, class: "metadata" },
  { title: "Created", cell: (j) => fmtTime(j.created_at) },
];

export const jobsView = {
  nav: "jobs",
  title: "jobs",
  render(main, params, ctx) {
    let status = STATUSES.includes(params.status) ? params.status : "";
    let pages = 1; // how many pages are shown: a refresh reloads that many
    let timer = null;
    let alive = true;

    const select = h("select", { id: "status-filter", "aria-label": "status" },
      STATUSES.map((s) => h("option", { value: s }, s || "all statuses")));
    select.value = status;
    select.addEventListener("change", () => {
      status = select.value;
      pages = 1;
      ctx.navigate(status ? `#/jobs?status=${status}` : "#/jobs");
    });
    const holder = h("div", { id: "jobs-table" }, h("p", { class: "muted" }, "Loading…"));
    const more = h("button", { type: "button", hidden: true }, "Load more");
    more.addEventListener("click", () => {
      pages += 1;
      load();
    });
    const updated = h("span", { class: "muted small" });
    main.append(
      h("div", { class: "page-head" },
        h("h1", {}, "Jobs"),
        h("div", { class: "row" }, select, h("a", { href: "#/new", class: "button primary" }, "New job"))),
      holder, h("div", { class: "row between" }, more, updated));

    async function load() {
      clearTimeout(timer);
      try {
        const { rows, hasMore } = await collectPages((cursor) => api.jobs({ ...cursor, status }), pages);
        if (!alive) return;
        holder.replaceChildren(table(JOB_COLUMNS, rows, {
          empty: "No jobs yet: submit one with New job.",
          rowAttrs: (j) => ({ dataset: { jobId: j.id, status: j.status } }),
        }));
        more.hidden = !hasMore;
        updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
      } catch (err) {
        if (!alive) return;
        if (err.status !== 401) holder.replaceChildren(h("p", { class: "error" }, `Could not load jobs: ${err.message}`));
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
