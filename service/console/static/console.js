// The console's entry point: picks the page from the path (/ui, /ui/experiments/NAME, /ui/models).
import { el, showTokenState } from "./common.js";
import { renderExperiments } from "./experiments.js";
import { renderExperiment } from "./experiment.js";
import { renderModels } from "./models.js";

async function route() {
  const page = document.getElementById("page");
  const path = decodeURIComponent(location.pathname.replace(/\/+$/, ""));
  const match = path.match(/^\/ui\/experiments\/(.+)$/);
  const section = match ? "experiments" : path === "/ui/models" ? "models" : "experiments";
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.nav === section);
  }
  showTokenState();
  try {
    if (match) await renderExperiment(page, match[1]);
    else if (path === "/ui/models") await renderModels(page);
    else await renderExperiments(page);
  } catch (error) {
    page.replaceChildren(el("div", { class: "banner error", text: `The page failed: ${error}` }));
  }
  document.body.dataset.ready = "true";
}

route();
