// The new-compare form: a CompareConfig (service/compare_config.py) posted to /compare. The grid is
// activations (checkboxes from GET /activations; relu is always the control) x strategies x inits,
// each trained `seeds` times; model, dataset, training and export are form.js's, shared with the job form.

import { api } from "./api.js";
import { h } from "./dom.js";
import { checkbox, checkField, commonSections, field, handleSubmit, number, parseList, postConfig, prune } from "./form.js";

const CONTROL = "relu";

export const compareNewView = {
  nav: "compare",
  title: "new compare job",
  render(main, _params, ctx) {
    let alive = true;
    const common = commonSections({ epochs: 3 });

    const activationsBox = h("div", { class: "checks", id: "compare-activations" }, h("span", { class: "muted" }, "loading…"));
    const strategies = h("textarea", { id: "strategies", name: "strategies", rows: "3", spellcheck: "false" }, "all");
    const seeds = number("seeds", { value: 3, min: 1, max: 32 });
    const testSplit = number("test-split", { value: 0.2, min: 0.01, max: 0.99, step: "any" });
    const initIdentity = checkbox("init-identity", true);
    const initPaper = checkbox("init-paper", false);
    const arms = h("p", { class: "muted", id: "compare-size" });

    const errorBox = h("div", { id: "submit-error", class: "error pre", role: "alert", hidden: true });
    const submit = h("button", { type: "submit", class: "primary", id: "compare-submit" }, "Submit compare job");

    function chosen() {
      return [...activationsBox.querySelectorAll("input[data-activation]:checked:not([disabled])")]
        .map((el) => el.dataset.activation);
    }

    function inits() {
      return [initIdentity.checked && "identity", initPaper.checked && "paper"].filter(Boolean);
    }

    function updateSize() {
      const n = chosen().length * Math.max(parseList(strategies.value).length, 1) * Math.max(inits().length, 1) + 1;
      const k = Number(seeds.value) || 0;
      arms.textContent = `${n} arms (with the relu control) × ${k} seed(s) + the original = ${n * k + 1} jobs`;
    }
    for (const el of [strategies, seeds, initIdentity, initPaper]) el.addEventListener("input", updateSize);
    activationsBox.addEventListener("change", updateSize);

    function buildConfig() {
      const activations = chosen();
      if (!activations.length) throw new Error("activations: choose at least one besides relu (the control)");
      const strategyList = parseList(strategies.value);
      const initList = inits();
      if (!initList.length) throw new Error("inits: choose identity, paper or both");
      const { model, dataset, train, export: exp, metadata } = common.config();
      return prune({
        model, dataset, activations,
        strategies: strategyList.length ? strategyList : ["all"],
        inits: initList.length > 1 ? initList : undefined,
        activation_options: { init: initList[0] },
        seeds: Number.parseInt(seeds.value, 10),
        test_split: Number(testSplit.value) || undefined,
        train, export: exp, metadata,
      });
    }

    const s = common.sections;
    const form = h("form", { id: "compare-form", class: "form", novalidate: true },
      h("div", { class: "page-head" }, h("h1", {}, "New compare job")),
      h("p", { class: "muted" }, "Every activation × strategy × init is an arm, trained once per seed, and ranked "
        + "against two controls: the original model (measured once) and relu (BatchNorm re-fit alone)."),
      s.lists, s.model, s.dataset,
      h("fieldset", { class: "card" }, h("legend", {}, "Grid"),
        h("div", { class: "field" }, h("span", { class: "label" }, "Activations"), activationsBox),
        h("div", { class: "fields" },
          field("Strategies (one per line or comma-separated)", strategies,
            "all, first:N, last:N, fraction:F, block:…, names:…, kind:…, dead:R; join clauses with +"),
          field("Seeds", seeds, "runs per arm"),
          field("Test split", testSplit, "held out of every child alike"),
          h("div", { class: "field" }, h("span", { class: "label" }, "Inits"),
            checkField(initIdentity, "identity"), checkField(initPaper, "paper"))),
        arms),
      s.training, s.export,
      errorBox,
      h("div", { class: "row" }, submit, h("a", { href: "#/compare", class: "button" }, "Cancel")));

    handleSubmit(form, {
      button: submit, errorBox, busyText: "Submitting…", build: buildConfig, alive: () => alive,
      send: (config) => postConfig("/compare", config, common.files()),
      onDone(compare) {
        ctx.toast(`Compare job ${compare.id} created.`);
        ctx.navigate(`#/compare/${encodeURIComponent(compare.id)}`);
      },
    });
    main.append(form);
    updateSize();

    api.activations().then((list) => {
      if (!alive) return;
      activationsBox.replaceChildren(...list.data.map((a) => {
        const control = a.name === CONTROL;
        const input = checkbox(`act-${a.name}`, control);
        input.dataset.activation = a.name;
        input.disabled = control;
        return checkField(input, control ? `${a.title} (${a.name}): always the control` : `${a.title} (${a.name})`);
      }));
      activationsBox.dataset.loaded = "true";
      updateSize();
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
