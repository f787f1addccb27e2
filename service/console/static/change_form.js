// The change form: weights, coverage, objective, running. PUT /experiments/{name} with the admin token;
// each 422 issue is shown beside the field its `loc` names (the whole-spec checks name a field first:
// "arms: weights must sum to 100").
import { api, askToken, el, errorText, forgetToken, token } from "./common.js";

const FIELD_PREFIX = /^(?:Value error, )?([a-z_]+): /;

function field(label, name, control) {
  return el("div", { class: "field" }, el("label", { for: `field-${name}`, text: label }), control, el("span", { class: "error", "data-error-for": name }));
}

function input(name, value) {
  return el("input", { type: "text", inputmode: "decimal", id: `field-${name}`, name, value });
}

export function changeForm(experiment, onSaved) {
  const form = el("form", { class: "change", id: "change-form", novalidate: true });
  const objective = el(
    "select",
    { id: "field-objective", name: "objective" },
    ["ctr", "ctr_bid"].map((value) => el("option", { value, selected: value === experiment.objective, text: value })),
  );
  const running = el("input", { type: "checkbox", id: "field-running", name: "running", checked: experiment.running });
  form.append(
    ...experiment.arms.map((arm, index) => field(`weight of ${arm.name} (%)`, `arms.${index}.weight`, input(`arms.${index}.weight`, arm.weight))),
    el("div", { class: "field" }, el("span"), el("span", { class: "error", "data-error-for": "arms" })),
    field("coverage (% of users)", "coverage", input("coverage", experiment.coverage)),
    field("objective", "objective", objective),
    field("running (unchecked: stop, serve the default arm)", "running", running),
    el("div", { class: "error", "data-error-for": "" }),
    el("div", { class: "muted", id: "change-status" }),
    el("button", { type: "submit", id: "save", text: "Save changes" }),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await submit(form, experiment, onSaved);
  });
  return form;
}

function numberOrRaw(text) {
  const value = Number(text.trim());
  return text.trim() !== "" && Number.isFinite(value) ? value : text;
}

function spec(form, experiment) {
  const values = new FormData(form);
  return {
    arms: experiment.arms.map((arm, index) => ({ name: arm.name, model: arm.model, weight: numberOrRaw(values.get(`arms.${index}.weight`)) })),
    control: experiment.control,
    objective: values.get("objective"),
    coverage: numberOrRaw(values.get("coverage")),
    default_arm: experiment.default_arm,
    running: form.querySelector("#field-running").checked,
  };
}

async function submit(form, experiment, onSaved) {
  clearErrors(form);
  const status = form.querySelector("#change-status");
  const admin = await askToken();
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (admin) headers.Authorization = `Bearer ${admin}`;
  status.textContent = "Saving…";
  const answer = await api(`/experiments/${encodeURIComponent(experiment.name)}`, { method: "PUT", headers, body: JSON.stringify(spec(form, experiment)) });
  status.textContent = "";
  if (answer.ok) {
    const saved = `Saved: version ${answer.body.version}.`;
    status.textContent = saved;
    await onSaved(answer.body);
    // onSaved re-renders the page, form included: the confirmation belongs on the new form
    const fresh = document.getElementById("change-status");
    if (fresh) fresh.textContent = saved;
    return;
  }
  if (answer.status === 401 || answer.status === 403) {
    if (token()) forgetToken();
    showError(form, "", `Refused (${answer.status}): ${errorText(answer.body)}`);
    return;
  }
  const issues = Array.isArray(answer.body?.detail) ? answer.body.detail : [{ loc: [], msg: errorText(answer.body) }];
  for (const issue of issues) showError(form, fieldOf(form, issue), issue.msg);
}

// The form field a 422 issue names: its loc under "body", else a "field: ..." message, else the form.
function fieldOf(form, issue) {
  const loc = issue.loc || [];
  let path = loc[0] === "body" ? loc.slice(1).map(String) : [];
  if (path.length === 0) {
    const named = FIELD_PREFIX.exec(issue.msg || "");
    path = named ? [named[1]] : [];
  }
  for (let end = path.length; end > 0; end -= 1) {
    const name = path.slice(0, end).join(".");
    if (form.querySelector(`[data-error-for="${CSS.escape(name)}"]`)) return name;
  }
  return "";
}

function showError(form, name, raw) {
  const message = String(raw).replace(/^Value error, /, "");
  const slot = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
  slot.textContent = slot.textContent ? `${slot.textContent}; ${message}` : message;
  const control = name && form.querySelector(`[name="${CSS.escape(name)}"]`);
  if (control) {
    control.classList.add("invalid");
    control.setAttribute("aria-invalid", "true");
  }
}

function clearErrors(form) {
  for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
  for (const control of form.querySelectorAll(".invalid")) {
    control.classList.remove("invalid");
    control.removeAttribute("aria-invalid");
  }
}
