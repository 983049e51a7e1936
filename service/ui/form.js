// Form pieces shared by the job form (submit.js) and the compare form (compare-new.js): inputs, the
// model / dataset / training / export fieldsets and their part of the config, and the submit (JSON,
// or multipart with weights / dataset files).

import { postForm, postJSON } from "./api.js";
import { h } from "./dom.js";

export const ARCHS = ["torchvision:resnet18", "torchvision:resnet34", "torchvision:resnet50",
  "torchvision:mobilenet_v2", "torchvision:vgg11_bn", "timm:resnet18", "timm:resnet50"];
export const DATASETS = ["builtin:digits", "synthetic:10x512", "torchvision:CIFAR10"];

export function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes); // also outside secure contexts, unlike randomUUID
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function field(label, input, hint) {
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input,
    hint ? h("small", { class: "muted" }, hint) : null);
}

export function checkField(input, label) {
  return h("div", { class: "field check" }, input, h("label", { for: input.id }, label));
}

export function select(id, values, value) {
  const el = h("select", { id, name: id }, values.map((v) => (Array.isArray(v)
    ? h("option", { value: v[0] }, v[1]) : h("option", { value: v }, v))));
  if (value !== undefined && value !== null) el.value = value;
  return el;
}

export function number(id, { value, min, max, step, placeholder } = {}) {
  return h("input", { type: "number", id, name: id, value: value === undefined ? undefined : String(value),
    min: min === undefined ? undefined : String(min), max: max === undefined ? undefined : String(max),
    step: step === undefined ? undefined : String(step), placeholder });
}

export function text(id, { value, placeholder, list } = {}) {
  return h("input", { type: "text", id, name: id, value, placeholder, list, autocomplete: "off", spellcheck: "false" });
}

export function checkbox(id, checked = false) {
  return h("input", { type: "checkbox", id, name: id, checked });
}

export function datalist(id, values) {
  return h("datalist", { id }, values.map((v) => h("option", { value: v })));
}

export function num(input, parse = Number) {
  const v = input.value.trim();
  return v === "" ? undefined : parse(v);
}

export function parseMetadata(textValue) {
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

// Items of a comma- or line-separated list, trimmed, empty ones dropped.
export function parseList(textValue) {
  return textValue.split(/[,\n]/).map((s) => s.trim()).filter(Boolean);
}

export function prune(obj) {
  // Drop undefined values (JSON.stringify would too, but what is checked should match what is sent).
  return JSON.parse(JSON.stringify(obj));
}

// The model, dataset, training and export fieldsets both forms share. `config()` gives their part of
// the config ({model, dataset, train, export, metadata}); `files()` the uploads chosen.
export function commonSections({ epochs = 3 } = {}) {
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
  const augment = checkbox("augment");

  // ---- training
  const epochsInput = number("epochs", { value: epochs, min: 1, max: 10000 });
  const maxSteps = number("max-steps", { min: 1, placeholder: "none (use epochs)" });
  const batchSize = number("batch-size", { value: 64, min: 1, max: 65536 });
  const lr = number("lr", { value: 0.001, min: 0, max: 10, step: "any" });
  const optimizer = select("optimizer", ["adam", "sgd"], "adam");
  const trainable = select("trainable", ["bn+act", "act", "all"], "bn+act");
  const seed = number("seed", { value: 0 });
  const statsBatches = number("stats-batches", { value: 16, min: 1 });

  // ---- export and metadata
  const onnx = checkbox("export-onnx", true);
  const pt2 = checkbox("export-pt2", true);
  const metadata = h("textarea", { id: "metadata", name: "metadata", rows: "2", placeholder: "note=first try" });

  const sections = {
    lists: [datalist("arch-list", ARCHS), datalist("dataset-list", DATASETS)],
    model: h("fieldset", { class: "card" }, h("legend", {}, "Model"),
      h("div", { class: "fields" },
        field("Architecture", arch, "torchvision:<name> or timm:<name>"),
        field("Classes", numClasses),
        field("Weights", weightsMode),
        field("Weights file", weightsFile, ".safetensors, .pt or .pth state_dict"))),
    dataset: h("fieldset", { class: "card" }, h("legend", {}, "Dataset"),
      h("div", { class: "fields" },
        field("Dataset reference", datasetUri, "builtin:digits, synthetic:<classes>x<images>, imagefolder:<dir>, …"),
        field("Or upload an archive", datasetFile, "ImageFolder layout: .zip, .tar.gz or .tgz"),
        field("Image size", imageSize),
        checkField(augment, "light augmentation"))),
    training: h("fieldset", { class: "card" }, h("legend", {}, "Training"),
      h("div", { class: "fields" },
        field("Epochs", epochsInput), field("Max steps", maxSteps, "overrides epochs"), field("Batch size", batchSize),
        field("Learning rate", lr), field("Optimizer", optimizer), field("Trainable", trainable), field("Seed", seed),
        field("Stats batches", statsBatches, "validation batches for activation statistics"))),
    export: h("fieldset", { class: "card" }, h("legend", {}, "Export and metadata"),
      h("div", { class: "fields" },
        checkField(onnx, "model.onnx"),
        checkField(pt2, "model.pt2 (torch.export)"),
        field("Metadata (key=value per line)", metadata))),
  };

  function config() {
    const uploadWeights = weightsMode.value === "upload";
    if (uploadWeights && !weightsFile.files.length) throw new Error("weights: choose a file to upload, or another weights mode");
    const uploadDataset = datasetFile.files.length > 0;
    return {
      model: { arch: arch.value.trim(), num_classes: num(numClasses, parseInt), weights: weightsMode.value },
      dataset: { uri: uploadDataset ? "upload" : datasetUri.value.trim(), image_size: num(imageSize, parseInt),
        augment: augment.checked || undefined },
      train: { epochs: num(epochsInput, parseInt), max_steps: num(maxSteps, parseInt), batch_size: num(batchSize, parseInt),
        lr: num(lr), optimizer: optimizer.value, trainable: trainable.value, seed: num(seed, parseInt),
        stats_batches: num(statsBatches, parseInt) },
      export: { onnx: onnx.checked, pt2: pt2.checked },
      metadata: parseMetadata(metadata.value),
    };
  }

  function files() {
    const out = {};
    if (weightsMode.value === "upload" && weightsFile.files.length) out.weights = weightsFile.files[0];
    if (datasetFile.files.length) out.dataset = datasetFile.files[0];
    return out;
  }

  return { sections, config, files };
}

// POST a config: JSON, or multipart (a config part and the files) when there are files.
export async function postConfig(path, config, files, headers = {}) {
  const names = Object.keys(files || {});
  if (!names.length) return postJSON(path, config, headers);
  const data = new FormData();
  data.append("config", JSON.stringify(config));
  for (const name of names) data.append(name, files[name]);
  return postForm(path, data, headers);
}

// Wire a form's submit: build the config (errors shown in errorBox), post it, then onDone(result).
export function handleSubmit(form, { button, errorBox, busyText, build, send, onDone, alive }) {
  const label = button.textContent;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    errorBox.hidden = true;
    let built;
    try {
      built = build();
    } catch (err) {
      errorBox.textContent = err.message;
      errorBox.hidden = false;
      return;
    }
    button.disabled = true;
    button.textContent = busyText;
    try {
      const result = await send(built);
      onDone(result);
    } catch (err) {
      if (!alive()) return;
      errorBox.textContent = err.param ? `${err.message}\n(field: ${err.param})` : err.message;
      errorBox.hidden = false;
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  });
}
