// The new-job form: builds a JobConfig (service/job_config.py) and posts it to /finetune, as JSON,
// or as multipart (config + weights / dataset files) when files are chosen. Activation options come
// from GET /activations. The model, dataset, training and export parts are form.js's, shared with
// the compare form.

import { api } from "./api.js";
import { append, h } from "./dom.js";
import { commonSections, field, handleSubmit, number, postConfig, prune, randomKey, select, text } from "./form.js";

export const submitView = {
  nav: "new",
  title: "new job",
  render(main, _params, ctx) {
    let alive = true;
    let idempotencyKey = randomKey();
    let catalogue = [];
    const common = commonSections();

    // ---- activation
    const activation = h("select", { id: "activation", name: "activation", disabled: true },
      h("option", { value: "" }, "loading…"));
    const activationInfo = h("div", { class: "activation-info muted", id: "activation-info" });
    const optionsBox = h("div", { class: "fields", id: "activation-options" });
    const strategy = text("strategy", { value: "all" });

    const errorBox = h("div", { id: "submit-error", class: "error pre", role: "alert", hidden: true });
    const submit = h("button", { type: "submit", class: "primary", id: "submit" }, "Submit job");

    function renderOptions() {
      const info = catalogue.find((a) => a.name === activation.value);
      optionsBox.replaceChildren();
      activationInfo.replaceChildren();
      if (!info) return;
      append(activationInfo, [h("code", {}, info.formula), info.notes ? h("p", {}, info.notes) : null,
        info.params.length ? h("p", {}, "Parameters: ", info.params.map((p) => `${p.name} (${p.doc})`).join("; ")) : null]);
      optionsBox.append(field("Init", select("opt-init", [["identity", "identity (same function as ReLU)"],
        ["paper", "paper values"]], "identity")));
      if (info.granularities.length) {
        optionsBox.append(field("Granularity", select("opt-granularity", info.granularities, info.default_granularity)));
      }
      if (info.kind === "conv") {
        optionsBox.append(field("Fallback", select("opt-fallback", [["", "default"], "skip", "adarelu"], ""),
          "for sites with no consuming Conv2d"));
        optionsBox.append(field("Implementation", select("opt-convrelu_impl",
          ["auto", "fused", "patches", "shifted", "unfold"], "auto")));
      }
      for (const [name, value] of Object.entries(info.options || {})) {
        const input = typeof value === "number" ? number(`opt-${name}`, { value, step: "any" })
          : text(`opt-${name}`, { value: String(value) });
        input.dataset.option = name;
        input.dataset.kind = typeof value;
        optionsBox.append(field(name, input));
      }
    }
    activation.addEventListener("change", renderOptions);

    function activationOptions() {
      const out = {};
      for (const el of optionsBox.querySelectorAll("select, input")) {
        const name = el.dataset.option || el.id.replace(/^opt-/, "");
        if (el.value === "") continue;
        out[name] = el.dataset.kind === "number" ? Number(el.value) : el.value;
      }
      return out;
    }

    function buildConfig() {
      const { model, dataset, train, export: exp, metadata } = common.config();
      return prune({ model, dataset, activation: activation.value, activation_options: activationOptions(),
        strategy: strategy.value.trim() || "all", train, export: exp, metadata });
    }

    const s = common.sections;
    const form = h("form", { id: "submit-form", class: "form", novalidate: true },
      h("div", { class: "page-head" }, h("h1", {}, "New fine-tuning job"),
        h("a", { href: "#/compare/new", class: "button" }, "Compare several instead")),
      s.lists, s.model, s.dataset,
      h("fieldset", { class: "card" }, h("legend", {}, "Activation"),
        h("div", { class: "fields" }, field("Activation", activation), field("Strategy", strategy,
          "all, first:N, last:N, fraction:F, block:…, names:…, kind:…, dead:R; join clauses with +")),
        activationInfo, optionsBox),
      s.training, s.export,
      errorBox,
      h("div", { class: "row" }, submit, h("a", { href: "#/jobs", class: "button" }, "Cancel")));

    handleSubmit(form, {
      button: submit, errorBox, busyText: "Submitting…", build: buildConfig, alive: () => alive,
      send: (config) => postConfig("/finetune", config, common.files(), { "Idempotency-Key": idempotencyKey }),
      onDone(job) {
        idempotencyKey = randomKey();
        ctx.toast(`Job ${job.id} created.`);
        ctx.navigate(`#/jobs/${encodeURIComponent(job.id)}`);
      },
    });

    main.append(form);

    api.activations().then((list) => {
      if (!alive) return;
      catalogue = list.data;
      activation.replaceChildren(...catalogue.map((a) => h("option", { value: a.name }, `${a.title} (${a.name})`)));
      activation.value = catalogue.some((a) => a.name === "pvlu") ? "pvlu" : (catalogue[0] || {}).name || "";
      activation.disabled = false;
      renderOptions();
    }).catch((err) => {
      if (!alive) return;
      errorBox.textContent = `Could not load the activations: ${err.message}`;
      errorBox.hidden = false;
    });

    return () => {
      alive = false;
    };
  },
};
