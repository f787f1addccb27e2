// Shared by the console's pages: DOM building (text only, never HTML from data), the JSON API, number
// formats, and the admin token (asked once per browser session, kept in sessionStorage).

const TOKEN_KEY = "apprank.adminToken";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export async function api(path, options = {}) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  return { status: response.status, ok: response.ok, body };
}

export function errorText(body) {
  if (body && Array.isArray(body.detail)) return body.detail.map((d) => d.msg).join("; ");
  if (body && typeof body.detail === "string") return body.detail;
  if (body && body.detail && body.detail.reason) return body.detail.reason;
  return typeof body === "string" ? body : JSON.stringify(body);
}

// Number formats: the report page's tests read these back, so they are the one place formats live.
export const fmt = {
  percent: (v, digits = 2) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(digits)} %`),
  number: (v, digits = 4) => (v === null || v === undefined ? "–" : v.toFixed(digits)),
  count: (v) => (v === null || v === undefined ? "–" : v.toLocaleString("en-US")),
  p: (v) => (v === null || v === undefined ? "–" : v < 0.0001 ? "<0.0001" : v.toFixed(4)),
  interval: (ci, digits = 2, scale = 100, unit = " %") =>
    !ci || ci.low === null || ci.high === null
      ? "–"
      : `[${(scale * ci.low).toFixed(digits)}, ${(scale * ci.high).toFixed(digits)}]${unit}`,
  time: (iso) => new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC",
};

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
}

export function showTokenState() {
  const state = document.getElementById("token-state");
  if (!state) return;
  state.replaceChildren(
    token() ? el("span", { text: "admin token set for this session " }) : "",
    token() ? el("button", { class: "secondary", id: "forget-token", type: "button", text: "Forget" }) : "",
  );
  const forget = document.getElementById("forget-token");
  if (forget) forget.addEventListener("click", forgetToken);
}

// The admin token: the stored one, or asked in a dialog (null when the user cancels).
export function askToken() {
  const known = token();
  if (known) return Promise.resolve(known);
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  input.value = "";
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const value = input.value.trim();
        if (dialog.returnValue === "ok" && value) {
          sessionStorage.setItem(TOKEN_KEY, value);
          showTokenState();
          resolve(value);
        } else resolve(null);
      },
      { once: true },
    );
  });
}
