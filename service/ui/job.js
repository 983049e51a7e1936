// One job: status and progress (live, from the SSE stream read with fetch), metrics, plots, artifacts,
// events and its config. Polls instead when the stream cannot be read.

import { api, streamEvents } from "./api.js";
import { artifactTable, blobImage } from "./artifacts.js";
import { clear, dl, fmtDuration, fmtTime, fmtValue, h, statusBadge, table } from "./dom.js";

const ENDED = ["succeeded", "failed", "cancelled"];
const CANCELLABLE = ["queued", "running"];
const POLL_MS = 2000;
const MAX_EVENTS_SHOWN = 500;

function progressCard(job) {
  let p = job.progress || {};
  // A succeeded job is complete whatever its last (throttled) progress write said.
  const fraction = job.status === "succeeded" ? 1
    : typeof p.fraction === "number" ? Math.min(Math.max(p.fraction, 0), 1) : null;
  const bar = h("progress", { id: "progress-bar", max: "1" });
  if (fraction !== null) bar.value = fraction;
  const parts = [];
  // A succeeded job's last progress write may predate its last steps (writes are throttled): no detail.
  if (job.status === "succeeded") p = {};
  if (p.epoch !== undefined && p.epochs !== undefined) parts.push(`epoch ${p.epoch}/${p.epochs}`);
  if (p.step !== undefined && p.steps !== undefined) parts.push(`step ${p.step}/${p.steps}`);
  if (typeof p.loss === "number") parts.push(`loss ${fmtValue(p.loss)}`);
  if (typeof p.accuracy === "number") parts.push(`accuracy ${fmtValue(p.accuracy)}`);
  if (typeof p.images_per_s === "number") parts.push(`${Math.round(p.images_per_s)} images/s`);
  const eta = p.eta_seconds !== undefined && p.eta_seconds !== null && !ENDED.includes(job.status)
    ? `ETA ${fmtDuration(p.eta_seconds)}` : null;
  return h("section", { class: "card", id: "progress" },
    h("h2", {}, "Progress"),
    h("div", { class: "progress-line" },
      h("span", { class: "stage", id: "progress-stage" }, stageLabel(job)),
      bar,
      h("span", { class: "pct" }, fraction === null ? "" : `${Math.round(fraction * 100)}%`),
      eta ? h("span", { class: "eta", id: "progress-eta" }, eta) : null),
    parts.length ? h("p", { class: "muted" }, parts.join(" · ")) : null,
    job.error ? h("p", { class: "error pre", id: "job-error" }, `${job.error.code}: ${job.error.message}`) : null,
    h("div", { class: "timeline" }, dl([
      ["Created", fmtTime(job.created_at)],
      ["Started", job.started_at ? fmtTime(job.started_at) : null],
      ["Finished", job.finished_at ? fmtTime(job.finished_at) : null],
      ["Duration", job.started_at && job.finished_at
        ? fmtDuration((new Date(job.finished_at) - new Date(job.started_at)) / 1000) : null],
      ["Attempts", String(job.attempts)],
    ])));
}

function stageLabel(job) {
  const stage = (job.progress || {}).stage;
  if (job.status === "queued") return "waiting for a worker";
  if (job.status === "succeeded") return "done";
  if (job.status === "failed") return stage ? `failed (${stage})` : "failed";
  if (job.status === "cancelled") return "cancelled";
  return stage || "starting";
}

function metricsCard(job) {
  const m = job.metrics || {};
  const keys = Object.keys(m);
  return h("section", { class: "card", id: "metrics" },
    h("h2", {}, "Metrics"),
    keys.length
      ? table([{ title: "Metric", cell: (k) => k, class: "mono" }, { title: "Value", cell: (k) => fmtValue(m[k]), class: "num" }],
        keys)
      : h("p", { class: "muted" }, ENDED.includes(job.status) ? "No metrics." : "Metrics appear when the job ends."));
}

function configCard(job) {
  const c = job.config || {};
  const metadata = c.metadata || {};
  const t = c.train || {};
  return h("section", { class: "card", id: "config" },
    h("h2", {}, "Configuration"),
    dl([
      ["Model", `${(c.model || {}).arch || ""}${(c.model || {}).num_classes ? ` (${c.model.num_classes} classes)` : ""}`],
      ["Weights", (c.model || {}).weights],
      ["Dataset", (c.dataset || {}).uri],
      ["Activation", c.activation],
      ["Strategy", c.strategy],
      ["Training", [t.max_steps ? `max_steps ${t.max_steps}` : t.epochs ? `epochs ${t.epochs}` : null,
        t.batch_size ? `batch ${t.batch_size}` : null, t.lr ? `lr ${t.lr}` : null].filter(Boolean).join(", ")],
    ]),
    Object.keys(metadata).length
      ? [h("h3", {}, "Metadata"), h("dl", { class: "kv", id: "metadata" },
        Object.entries(metadata).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))]
      : null,
    h("details", {}, h("summary", {}, "Full config (JSON)"), h("pre", { class: "json" }, JSON.stringify(c, null, 2))));
}

export const jobView = {
  nav: "jobs",
  title: "job",
  render(main, { id }, ctx) {
    let job = null;
    let alive = true;
    let lastEventId;
    let pollTimer = null;
    let artifactsLoadedFor = null; // the status artifacts were last listed at
    const controller = new AbortController();
    const objectUrls = [];
    const events = [];

    const head = h("div", { class: "page-head" });
    const progressBox = h("div");
    const metricsBox = h("div");
    const plotsBox = h("section", { class: "card", id: "plots" }, h("h2", {}, "Report"), h("p", { class: "muted" }, "…"));
    const artifactsBox = h("section", { class: "card", id: "artifacts" }, h("h2", {}, "Artifacts"), h("p", { class: "muted" }, "…"));
    const eventsBody = h("div", { id: "events-table" });
    const eventsBox = h("section", { class: "card", id: "events" }, h("h2", {}, "Events"), eventsBody);
    const configBox = h("div");
    const crumbs = h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs"));
    main.append(
      crumbs,
      head,
      h("div", { class: "grid" }, h("div", { class: "col" }, progressBox, metricsBox, configBox),
        h("div", { class: "col" }, plotsBox, artifactsBox)),
      eventsBox);

    function renderHead() {
      const cancel = h("button", { type: "button", id: "cancel", class: "danger",
        disabled: !CANCELLABLE.includes(job.status) }, job.status === "cancelling" ? "Cancelling…" : "Cancel job");
      cancel.addEventListener("click", async () => {
        if (!window.confirm("Cancel this job?")) return;
        cancel.disabled = true;
        try {
          job = await api.cancel(id);
          render();
          ctx.toast(`Job ${job.status}.`);
        } catch (err) {
          ctx.toast(`Cancel failed: ${err.message}`, "error");
          cancel.disabled = false;
        }
      });
      if (job.compare_id && !crumbs.querySelector("#compare-link")) {
        // A compare job's child: back to the compare, with its arm and seed.
        crumbs.append(" · ", h("a", { href: `#/compare/${encodeURIComponent(job.compare_id)}`, id: "compare-link" },
          `← Compare ${job.compare_id}`), h("span", { class: "muted", id: "compare-arm" },
          job.seed_index === null || job.seed_index === undefined ? ` (arm ${job.arm})`
            : ` (arm ${job.arm}, seed ${job.seed_index})`));
      }
      head.replaceChildren(
        h("h1", {}, "Job ", h("span", { class: "mono", id: "job-id" }, job.id)),
        h("div", { class: "row" }, h("span", { id: "job-status", dataset: { status: job.status } }, statusBadge(job.status)), cancel));
    }

    function render() {
      renderHead();
      progressBox.replaceChildren(progressCard(job));
      metricsBox.replaceChildren(metricsCard(job));
      if (!configBox.firstChild) configBox.append(configCard(job)); // the config never changes
      if (artifactsLoadedFor !== job.status && (ENDED.includes(job.status) || artifactsLoadedFor === null)) {
        artifactsLoadedFor = job.status;
        loadArtifacts();
      }
    }

    function renderEvents() {
      const shown = events.slice(-MAX_EVENTS_SHOWN).reverse();
      eventsBody.replaceChildren(table([
        { title: "Time", cell: (e) => fmtTime(e.created_at), class: "nowrap" },
        { title: "Type", cell: (e) => e.type },
        { title: "Level", cell: (e) => h("span", { class: `level-${String(e.level).replace(/[^a-z]/g, "")}` }, e.level) },
        { title: "Message", cell: (e) => e.message },
      ], shown, { empty: "No events yet." }));
    }

    async function showReport(button, holder) {
      // The artifact needs the bearer header, so it is fetched and shown from a blob: URL, in a frame
      // sandboxed without scripts or our origin: nothing in it can run or read this page (a new tab
      // would share the origin and a copy of the key's session storage). The blob document inherits
      // this page's CSP, so the report's inline <style>/<script> do not apply there; images as data:
      // URIs do. The download in the artifacts table gives the file as written.
      button.disabled = true;
      try {
        const blob = await api.artifact(id, "report.html");
        if (!alive) return;
        const url = URL.createObjectURL(new Blob([blob], { type: "text/html" }));
        objectUrls.push(url);
        const frame = h("iframe", { id: "report-frame", class: "report-frame", title: "report.html", src: url });
        frame.setAttribute("sandbox", "");
        holder.replaceChildren(frame);
        button.textContent = "Reload report.html";
      } catch (err) {
        ctx.toast(`Could not load the report: ${err.message}`, "error");
      } finally {
        button.disabled = false;
      }
    }

    async function loadArtifacts() {
      let list;
      try {
        list = (await api.artifacts(id)).data;
      } catch (err) {
        if (alive) artifactsBox.replaceChildren(h("h2", {}, "Artifacts"), h("p", { class: "error" }, err.message));
        return;
      }
      if (!alive) return;
      const fetchBlob = (name) => api.artifact(id, name);
      artifactsBox.replaceChildren(h("h2", {}, "Artifacts"), artifactTable(list, { fetchBlob, toast: ctx.toast,
        empty: ENDED.includes(job.status) ? "No artifacts." : "Artifacts appear when the job ends." }));

      const report = list.find((a) => a.name === "report.html");
      const pngs = list.filter((a) => a.name.toLowerCase().endsWith(".png"));
      const children = [h("h2", {}, "Report")];
      if (report) {
        const b = h("button", { type: "button", id: "open-report", class: "primary" }, "Show report.html");
        const holder = h("div", { class: "report-holder" });
        b.addEventListener("click", () => showReport(b, holder));
        children.push(h("p", {}, b), holder);
      }
      const figures = h("div", { class: "plots" });
      for (const a of pngs) {
        const img = blobImage(fetchBlob, a.name, { urls: objectUrls, alive: () => alive, attrs: { loading: "lazy" } });
        figures.append(h("figure", {}, img, h("figcaption", {}, a.name)));
      }
      if (pngs.length) children.push(figures);
      if (!report && !pngs.length) {
        children.push(h("p", { class: "muted" }, ENDED.includes(job.status) ? "This job has no report or plots."
          : "The report and its plots appear when the job ends."));
      }
      plotsBox.replaceChildren(...children);
    }

    function addEvent(e) {
      if (lastEventId !== undefined && Number(e.id) <= Number(lastEventId)) return;
      lastEventId = e.id;
      events.push(e);
    }

    async function refreshJob() {
      job = await api.job(id);
      if (alive) render();
    }

    async function stream() {
      let failures = 0;
      while (alive && !ENDED.includes(job.status)) {
        let ended = false;
        try {
          await streamEvents(api.eventsStreamPath(id), {
            after: lastEventId,
            signal: controller.signal,
            onEvent(type, data) {
              if (!alive) return;
              eventsBox.dataset.source = "stream"; // how this page follows the job (the test checks)
              if (type === "job") {
                job = data;
                render();
              } else if (type === "end") {
                ended = true;
              } else if (data && typeof data === "object" && data.id !== undefined) {
                addEvent(data);
                renderEvents();
              }
            },
          });
          failures = 0;
        } catch (err) {
          if (!alive || err.name === "AbortError") return;
          if (err.status === 401 || err.status === 404) throw err;
          failures += 1;
          if (failures >= 3) throw err;
        }
        if (ended) break;
        await new Promise((r) => setTimeout(r, 1000));
      }
      if (alive) await refreshJob(); // the final metrics and artifacts
    }

    async function poll() {
      // Fallback when the stream cannot be read: the job and new events every few seconds.
      if (!ENDED.includes(job.status)) eventsBox.dataset.source = "poll";
      try {
        await refreshJob();
        for (;;) {
          const page = await api.events(id, { after: lastEventId, limit: 100 });
          page.data.forEach(addEvent);
          if (!page.has_more) break;
        }
        renderEvents();
      } catch (err) {
        if (err.status === 401 || err.status === 404) return;
      }
      if (alive && !ENDED.includes(job.status)) pollTimer = setTimeout(poll, POLL_MS);
    }

    (async () => {
      try {
        job = await api.job(id);
      } catch (err) {
        if (alive && err.status !== 401) {
          clear(main).append(h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "← Jobs")),
            h("p", { class: "error" }, err.status === 404 ? `No job ${id}.` : `Could not load the job: ${err.message}`));
        }
        return;
      }
      if (!alive) return;
      render();
      renderEvents();
      if (ENDED.includes(job.status)) {
        poll(); // the events, once
        return;
      }
      try {
        await stream();
      } catch (err) {
        if (alive && err.status !== 401 && err.status !== 404) poll();
      }
      if (alive && ENDED.includes(job.status)) renderEvents();
    })();

    return () => {
      alive = false;
      controller.abort();
      clearTimeout(pollTimer);
      objectUrls.forEach((u) => URL.revokeObjectURL(u));
    };
  },
};
