// One compare job: status and children progress (polled while it runs), its arms with each seed's
// child as a status chip linking to the job, and once it succeeded the leaderboard (table and
// leaderboard.png), the winner and the artifacts (the leaderboard files and the winner's model).

import { api } from "./api.js";
import { artifactTable, blobImage } from "./artifacts.js";
import { clear, dl, fmtTime, fmtValue, h, statusBadge, table } from "./dom.js";
import { childrenProgress } from "./compares.js";

const ENDED = ["succeeded", "failed", "cancelled"];
const POLL_MS = 2000;
const VERDICTS = ["better", "no_difference", "worse", "failed", "control", "original"];

function chip(child) {
  const label = child.seed_index === null || child.seed_index === undefined ? child.status
    : `seed ${child.seed_index}: ${child.status}`;
  return h("a", {
    href: `#/jobs/${encodeURIComponent(child.id)}`,
    class: `badge chip status-${String(child.status).replace(/[^a-z]/g, "")}`,
    title: child.error ? `${child.id}\n${child.error.code}: ${child.error.message}` : child.id,
    dataset: { jobId: child.id, status: child.status },
  }, label);
}

// The API lists arms in its children's order (by arm name); show the controls first, original leading.
function armOrder(arm) {
  return arm.name === "original" ? 0 : arm.control ? 1 : 2;
}

function armsCard(compare) {
  const arms = [...(compare.arms || [])].sort((a, b) => armOrder(a) - armOrder(b));
  return h("section", { class: "card", id: "arms" },
    h("h2", {}, "Arms"),
    table([
      { title: "Arm", cell: (a) => [h("span", { class: "arm-name" }, a.name),
        a.control ? h("span", { class: "badge control", title: "a control every arm is measured against" }, "control")
          : null] },
      { title: "Children", cell: (a) => h("span", { class: "chips" }, a.children.map(chip)) },
    ], arms, { rowAttrs: (a) => ({ dataset: { arm: a.name, control: String(a.control) } }) }));
}

function verdictBadge(verdict) {
  const v = String(verdict ?? "");
  const cls = VERDICTS.includes(v) ? `verdict-${v.replace(/_/g, "-")}` : "";
  return h("span", { class: `badge verdict ${cls}`, dataset: { verdict: v } }, v.replace(/_/g, " ") || "–");
}

function leaderboardCard(compare) {
  const winner = compare.winner || {};
  return h("section", { class: "card", id: "leaderboard" },
    h("h2", {}, "Leaderboard"),
    compare.winner ? h("div", { class: "winner-box", id: "winner" },
      h("p", {}, h("strong", {}, "Winner: "), h("span", { class: "arm-name", id: "winner-arm" }, winner.arm),
        winner.control ? h("span", { class: "badge control" }, "control") : null,
        typeof winner.mean_final_accuracy === "number" ? ` (mean final accuracy ${fmtValue(winner.mean_final_accuracy)})` : ""),
      winner.reason ? h("p", { class: "muted", id: "winner-reason" }, winner.reason) : null) : null,
    table([
      { title: "Rank", cell: (r) => fmtValue(r.rank), class: "num" },
      { title: "Arm", cell: (r) => [h("span", { class: "arm-name" }, r.arm),
        r.control ? h("span", { class: "badge control" }, "control") : null] },
      { title: "Verdict", cell: (r) => verdictBadge(r.verdict) },
      { title: "Mean final accuracy", cell: (r) => (typeof r.final_accuracy === "number" ? fmtValue(r.final_accuracy) : "–"),
        class: "num" },
    ], compare.leaderboard || [], {
      empty: "No leaderboard.",
      rowAttrs: (r) => ({ class: r.arm === winner.arm ? "winner-row" : undefined, dataset: { arm: r.arm } }),
    }));
}

function configCard(compare) {
  const c = compare.config || {};
  const t = c.train || {};
  const metadata = c.metadata || {};
  return h("section", { class: "card", id: "compare-config" },
    h("h2", {}, "Configuration"),
    dl([
      ["Model", `${(c.model || {}).arch || ""}${(c.model || {}).num_classes ? ` (${c.model.num_classes} classes)` : ""}`],
      ["Weights", (c.model || {}).weights],
      ["Dataset", (c.dataset || {}).uri],
      ["Activations", (c.activations || []).join(", ")],
      ["Strategies", (c.strategies || []).join(", ")],
      ["Inits", (c.inits || []).join(", ")],
      ["Seeds", c.seeds === undefined ? null : String(c.seeds)],
      ["Test split", c.test_split === undefined ? null : String(c.test_split)],
      ["Training", [t.max_steps ? `max_steps ${t.max_steps}` : t.epochs ? `epochs ${t.epochs}` : null,
        t.batch_size ? `batch ${t.batch_size}` : null, t.lr ? `lr ${t.lr}` : null].filter(Boolean).join(", ")],
    ]),
    Object.keys(metadata).length
      ? [h("h3", {}, "Metadata"), h("dl", { class: "kv", id: "compare-metadata" },
        Object.entries(metadata).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))]
      : null,
    h("details", {}, h("summary", {}, "Full config (JSON)"), h("pre", { class: "json" }, JSON.stringify(c, null, 2))));
}

export const compareView = {
  nav: "compare",
  title: "compare job",
  render(main, { id }, ctx) {
    let compare = null;
    let alive = true;
    let timer = null;
    let artifactsShown = false;
    const objectUrls = [];
    const fetchBlob = (name) => api.compareArtifact(id, name);

    const head = h("div", { class: "page-head" });
    const progressBox = h("div");
    const armsBox = h("div");
    const leaderboardBox = h("div");
    const artifactsBox = h("div");
    const configBox = h("div");
    main.append(h("p", { class: "crumbs" }, h("a", { href: "#/compare" }, "← Compare jobs")),
      head, progressBox, leaderboardBox, armsBox, artifactsBox, configBox);

    function renderHead() {
      const cancel = h("button", { type: "button", id: "compare-cancel", class: "danger",
        disabled: ENDED.includes(compare.status) || compare.status === "cancelling" },
      compare.status === "cancelling" ? "Cancelling…" : "Cancel compare");
      cancel.addEventListener("click", async () => {
        if (!window.confirm("Cancel every child of this compare job that has not ended?")) return;
        cancel.disabled = true;
        try {
          compare = await api.cancelCompare(id);
          render();
          ctx.toast(`Compare job ${compare.status}.`);
        } catch (err) {
          ctx.toast(`Cancel failed: ${err.message}`, "error");
          cancel.disabled = false;
        }
      });
      head.replaceChildren(
        h("h1", {}, "Compare ", h("span", { class: "mono", id: "compare-id" }, compare.id)),
        h("div", { class: "row" },
          h("span", { id: "compare-status", dataset: { status: compare.status } }, statusBadge(compare.status)), cancel));
    }

    function progressCard() {
      const p = compare.progress || {};
      return h("section", { class: "card", id: "compare-progress" },
        h("h2", {}, "Progress"),
        h("div", { class: "progress-line" },
          h("span", { class: "stage" }, `${p.ended ?? 0} of ${p.children ?? 0} children ended`),
          childrenProgress(compare, "compare-progress-bar")),
        compare.status === "cancelling" && p.children && p.ended === p.children
          ? h("p", { class: "muted", id: "compare-ending" },
            "Every child has ended; the service marks the compare cancelled at its next check.") : null,
        compare.error ? h("p", { class: "error pre", id: "compare-error" },
          `${compare.error.code}: ${compare.error.message}`) : null,
        h("div", { class: "timeline" }, dl([
          ["Created", fmtTime(compare.created_at)],
          ["Finished", compare.finished_at ? fmtTime(compare.finished_at) : null],
        ])));
    }

    async function loadArtifacts() {
      let list;
      try {
        list = (await api.compareArtifacts(id)).data;
      } catch (err) {
        if (alive) artifactsBox.replaceChildren(h("section", { class: "card" }, h("p", { class: "error" }, err.message)));
        return;
      }
      if (!alive) return;
      artifactsBox.replaceChildren(h("section", { class: "card", id: "artifacts" }, h("h2", {}, "Artifacts"),
        artifactTable(list, { fetchBlob, toast: ctx.toast, empty: "No artifacts." })));
      if (list.some((a) => a.name === "leaderboard.png")) {
        const img = blobImage(fetchBlob, "leaderboard.png", { urls: objectUrls, alive: () => alive,
          attrs: { id: "leaderboard-img", class: "leaderboard-img" } });
        leaderboardBox.querySelector("#leaderboard")?.append(h("figure", {}, img));
      }
    }

    function render() {
      renderHead();
      progressBox.replaceChildren(progressCard());
      armsBox.replaceChildren(armsCard(compare));
      if (!configBox.firstChild) configBox.append(configCard(compare));
      if (ENDED.includes(compare.status) && !artifactsShown) {
        artifactsShown = true; // the leaderboard and the artifacts never change once ended
        if (compare.leaderboard) leaderboardBox.replaceChildren(leaderboardCard(compare));
        loadArtifacts();
      }
    }

    async function poll() {
      try {
        compare = await api.compare(id);
        if (!alive) return;
        render();
      } catch (err) {
        if (!alive || err.status === 401) return;
        if (!compare) {
          clear(main).append(h("p", { class: "crumbs" }, h("a", { href: "#/compare" }, "← Compare jobs")),
            h("p", { class: "error" }, err.status === 404 ? `No compare job ${id}.` : `Could not load it: ${err.message}`));
          return;
        }
      }
      if (alive && !ENDED.includes(compare.status)) timer = setTimeout(poll, POLL_MS);
    }
    poll();

    return () => {
      alive = false;
      clearTimeout(timer);
      objectUrls.forEach((u) => URL.revokeObjectURL(u));
    };
  },
};
