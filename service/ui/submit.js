// The new-job form: builds a JobConfig (service/job_config.py) and posts it to /finetune, as JSON,
// or as multipart (config + weights / dataset files) when files are chosen. Activation options come
// from GET /activations.

import { api, postForm, postJSON } from "./api.js";
import { append, h } from "./dom.js";

const ARCHS = ["torchvision:resnet18", "torchvision:resnet34", "torchvision:resnet50", "torchvision:mobilenet_v2",
  "torchvision:vgg11_bn", "timm:resnet18", "timm:resnet50"];
const DATASETS = ["builtin:digits", "synthetic:10x512", "torchvision:CIFAR10"];

function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes); // also outside secure contexts, unlike randomUUID
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function field(label, input, hint) {
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input, hint ? h("small", { class: "muted" }, hint) : null);
}

function select(id, values, value) {
  const el = h("select", { id, name: id }, values.map((v) => (Array.isArray(v)
    ? h("option", { value: v[0] }, v[1]) : h("option", { value: v }, v))));
  if (value !== undefined && value !== null) el.value = value;
  return el;
}

function number(id, { value, min, max, step, placeholder } = {}) {
  return h("input", { type: "number", id, name: id, value: value === undefined ? undefined : String(value),
    min: min === undefined ? undefined : String(min), max: max === undefined ? undefined : String(max),
    step: step === undefined ? undefined : String(step), placeholder });
}

function text(id, { value, placeholder, list } = {}) {
  return h("input", { type: "text", id, name: id, value, placeholder, list, autocomplete: "off", spellcheck: "false" });
}

function datalist(id, values) {
  return h("datalist", { id }, values.map((v) => h("option", { value: v })));
}

function num(input, parse = Number) {
  const v = input.value.trim();
  return v === "" ? undefined : parse(v);
}

function parseMetadata(textValue) {
  const out = {};
  for (const raw of textValue.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`metadata line ${JSON.stringify(line)} is not key=value`);
    out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

function prune(obj) {
  // Drop undefined values (JSON.stringify would too, but the preview should match what is sent).
  return JSON.parse(JSON.stringify(obj));
}

export const submitView = {
  nav: "new",
  title: "new job",
  render(main, _params, ctx) {
    let alive = true;
    let idempotencyKey = randomKey();
    let catalogue = [];

    // ---- model
    const arch = text("arch", { value: "torchvision:resnet18", list: "arch-list" });
    const numClasses = number("num-classes", { min: 2, placeholder: "from the dataset" });
    const weightsMode = select("weights-mode", [["none", "none (random init)"], ["default", "default (library weights)"],
      ["upload", "upload a file"]], "none");
    const weightsFile = h("input", { type: "file", id: "weights-file", name: "weights", accept: ".safetensors,.pt,.pth" });
    weightsFile.addEventListener("change", () => {
      if (weightsFile.files.length) weightsMode.value = "upload";
    });

    // ---- dataset
    const datasetUri = text("dataset-uri", { value: "builtin:digits", list: "dataset-list" });
    const datasetFile = h("input", { type: "file", id: "dataset-file", name: "dataset", accept: ".zip,.tar.gz,.tgz" });
    datasetFile.addEventListener("change", () => {
      datasetUri.disabled = datasetFile.files.length > 0;
    });
    const imageSize = number("image-size", { min: 8, max: 1024, placeholder: "the dataset's own" });
    const augment = h("input", { type: "checkbox", id: "augment", name: "augment" });

    // ---- activation
    const activation = h("select", { id: "activation", name: "activation", disabled: true },
      h("option", { value: "" }, "loading…"));
    const activationInfo = h("div", { class: "activation-info muted", id: "activation-info" });
    const optionsBox = h("div", { class: "fields", id: "activation-options" });
    const strategy = text("strategy", { value: "all" });

    // ---- training
    const epochs = number("epochs", { value: 3, min: 1, max: 10000 });
    const maxSteps = number("max-steps", { min: 1, placeholder: "none (use epochs)" });
    const batchSize = number("batch-size", { value: 64, min: 1, max: 65536 });
    const lr = number("lr", { value: 0.001, min: 0, max: 10, step: "any" });
    const optimizer = select("optimizer", ["adam", "sgd"], "adam");
    const trainable = select("trainable", ["bn+act", "act", "all"], "bn+act");
    const seed = number("seed", { value: 0 });
    const statsBatches = number("stats-batches", { value: 16, min: 1 });

    // ---- export and metadata
    const onnx = h("input", { type: "checkbox", id: "export-onnx", checked: true });
    const pt2 = h("input", { type: "checkbox", id: "export-pt2", checked: true });
    const metadata = h("textarea", { id: "metadata", name: "metadata", rows: "2", placeholder: "note=first try" });

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
      const uploadWeights = weightsMode.value === "upload";
      if (uploadWeights && !weightsFile.files.length) throw new Error("weights: choose a file to upload, or another weights mode");
      const uploadDataset = datasetFile.files.length > 0;
      return prune({
        model: { arch: arch.value.trim(), num_classes: num(numClasses, parseInt), weights: weightsMode.value },
        dataset: { uri: uploadDataset ? "upload" : datasetUri.value.trim(), image_size: num(imageSize, parseInt),
          augment: augment.checked || undefined },
        activation: activation.value,
        activation_options: activationOptions(),
        strategy: strategy.value.trim() || "all",
        train: { epochs: num(epochs, parseInt), max_steps: num(maxSteps, parseInt), batch_size: num(batchSize, parseInt),
          lr: num(lr), optimizer: optimizer.value, trainable: trainable.value, seed: num(seed, parseInt),
          stats_batches: num(statsBatches, parseInt) },
        export: { onnx: onnx.checked, pt2: pt2.checked },
        metadata: parseMetadata(metadata.value),
      });
    }

    const form = h("form", { id: "submit-form", class: "form", novalidate: true },
      h("div", { class: "page-head" }, h("h1", {}, "New fine-tuning job")),
      datalist("arch-list", ARCHS), datalist("dataset-list", DATASETS),
      h("fieldset", { class: "card" }, h("legend", {}, "Model"),
        h("div", { class: "fields" },
          field("Architecture", arch, "torchvision:<name> or timm:<name>"),
          field("Classes", numClasses),
          field("Weights", weightsMode),
          field("Weights file", weightsFile, ".safetensors, .pt or .pth state_dict"))),
      h("fieldset", { class: "card" }, h("legend", {}, "Dataset"),
        h("div", { class: "fields" },
          field("Dataset reference", datasetUri, "builtin:digits, synthetic:<classes>x<images>, imagefolder:<dir>, …"),
          field("Or upload an archive", datasetFile, "ImageFolder layout: .zip, .tar.gz or .tgz"),
          field("Image size", imageSize),
          h("div", { class: "field check" }, augment, h("label", { for: "augment" }, "light augmentation")))),
      h("fieldset", { class: "card" }, h("legend", {}, "Activation"),
        h("div", { class: "fields" }, field("Activation", activation), field("Strategy", strategy,
          "all, first:N, last:N, fraction:F, block:…, names:…, kind:…, dead:R; join clauses with +")),
        activationInfo, optionsBox),
      h("fieldset", { class: "card" }, h("legend", {}, "Training"),
        h("div", { class: "fields" },
          field("Epochs", epochs), field("Max steps", maxSteps, "overrides epochs"), field("Batch size", batchSize),
          field("Learning rate", lr), field("Optimizer", optimizer), field("Trainable", trainable), field("Seed", seed),
          field("Stats batches", statsBatches, "validation batches for activation statistics"))),
      h("fieldset", { class: "card" }, h("legend", {}, "Export and metadata"),
        h("div", { class: "fields" },
          h("div", { class: "field check" }, onnx, h("label", { for: "export-onnx" }, "model.onnx")),
          h("div", { class: "field check" }, pt2, h("label", { for: "export-pt2" }, "model.pt2 (torch.export)")),
          field("Metadata (key=value per line)", metadata))),
      errorBox,
      h("div", { class: "row" }, submit, h("a", { href: "#/jobs", class: "button" }, "Cancel")));

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      errorBox.hidden = true;
      let config;
      try {
        config = buildConfig();
      } catch (err) {
        errorBox.textContent = err.message;
        errorBox.hidden = false;
        return;
      }
      submit.disabled = true;
      submit.textContent = "Submitting…";
      try {
        const headers = { "Idempotency-Key": idempotencyKey };
        let job;
        if (weightsFile.files.length && config.model.weights === "upload" || datasetFile.files.length) {
          const data = new FormData();
          data.append("config", JSON.stringify(config));
          if (config.model.weights === "upload") data.append("weights", weightsFile.files[0]);
          if (datasetFile.files.length) data.append("dataset", datasetFile.files[0]);
          job = await postForm("/finetune", data, headers);
        } else {
          job = await postJSON("/finetune", config, headers);
        }
        idempotencyKey = randomKey();
        ctx.toast(`Job ${job.id} created.`);
        ctx.navigate(`#/jobs/${encodeURIComponent(job.id)}`);
      } catch (err) {
        if (!alive) return;
        errorBox.textContent = err.param ? `${err.message}\n(field: ${err.param})` : err.message;
        errorBox.hidden = false;
      } finally {
        submit.disabled = false;
        submit.textContent = "Submit job";
      }
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
