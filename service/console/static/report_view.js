// One experiment's live report: SRM banner, per-arm figures with both intervals, lifts with the
// decision, how it was computed, the chart, and the cumulative per-day decisions.
import { el, fmt } from "./common.js";

const cell = (text, value, attrs = {}) => el("td", { class: "num", "data-value": value ?? "", text, ...attrs });
const head = (...names) => el("thead", {}, el("tr", {}, names.map((name) => el("th", { text: name }))));

export function srmBanner(srm) {
  if (!srm.flagged) {
    const p = srm.p_value === null ? "not enough data" : `p = ${fmt.p(srm.p_value)}`;
    return el("div", { class: "banner ok", id: "srm", text: `Split as configured (sample-ratio check: ${p}).` });
  }
  const observed = Object.entries(srm.observed_users).map(([arm, n]) => `${arm} ${fmt.count(n)}`).join(", ");
  const expected = Object.entries(srm.expected_users).map(([arm, n]) => `${arm} ${n.toFixed(0)}`).join(", ");
  const text = `Sample ratio mismatch: users per arm (${observed}) do not follow the weights (expected ${expected || "–"}; p = ${fmt.p(srm.p_value)}). ${srm.note || ""} Do not trust the lifts until the cause is found.`;
  return el("div", { class: "banner srm", id: "srm", role: "alert", text });
}

export function armsTable(report) {
  const rows = report.arms.map((arm) =>
    el(
      "tr",
      { "data-arm": arm.arm },
      el("td", { text: arm.arm + (arm.control ? " (control)" : "") }),
      cell(arm.weight === null ? "–" : `${arm.weight} %`, arm.weight),
      cell(fmt.count(arm.users), arm.users, { "data-field": "users" }),
      cell(fmt.count(arm.impressions), arm.impressions, { "data-field": "impressions" }),
      cell(fmt.count(arm.downloads), arm.downloads, { "data-field": "downloads" }),
      cell(fmt.percent(arm.ctr, 3), arm.ctr, { "data-field": "ctr" }),
      cell(fmt.interval(arm.ctr_ci, 3), "", { "data-field": "ctr_ci" }),
      cell(fmt.interval(arm.ctr_sequential_ci, 3), "", { "data-field": "ctr_sequential_ci" }),
      cell(fmt.number(arm.cvr), arm.cvr, { "data-field": "cvr" }),
      cell(fmt.interval(arm.cvr_ci, 4, 1, ""), "", { "data-field": "cvr_ci" }),
      cell(fmt.interval(arm.cvr_sequential_ci, 4, 1, ""), "", { "data-field": "cvr_sequential_ci" }),
      cell(fmt.count(arm.users_with_history), arm.users_with_history, { "data-field": "users_with_history" }),
    ),
  );
  return el(
    "table",
    { id: "arms" },
    head("arm", "weight", "users", "impressions", "downloads", "CTR", "95 % CI", "always-valid CI", "CVR (downloads / user)", "95 % CI", "always-valid CI", "users with history"),
    el("tbody", {}, rows),
  );
}

function verdict(lift) {
  if (lift.conclusive) {
    const better = (lift.cuped ? lift.cuped.lift : lift.lift) > 0;
    return el("span", { class: "badge conclusive", text: `conclusive: ${better ? "better" : "worse"}` });
  }
  return el("span", { class: "badge keep", text: "keep running" });
}

export function liftsTable(lifts, id = "lifts") {
  const rows = lifts.map((lift) =>
    el(
      "tr",
      { "data-arm": lift.arm, "data-metric": lift.metric },
      el("td", { text: lift.arm }),
      el("td", { text: lift.metric.toUpperCase() }),
      cell(fmt.percent(lift.lift), lift.lift, { "data-field": "lift" }),
      cell(fmt.interval(lift.ci), "", { "data-field": "ci" }),
      cell(fmt.p(lift.p_value), lift.p_value, { "data-field": "p_value" }),
      cell(fmt.interval(lift.sequential_ci), "", { "data-field": "sequential_ci" }),
      cell(lift.cuped ? fmt.percent(lift.cuped.lift) : "–", lift.cuped?.lift, { "data-field": "cuped_lift" }),
      cell(lift.cuped ? fmt.interval(lift.cuped.sequential_ci) : "–", "", { "data-field": "cuped_sequential_ci" }),
      cell(lift.cuped && lift.cuped.variance_reduction !== null ? fmt.percent(lift.cuped.variance_reduction, 1) : "–", lift.cuped?.variance_reduction, { "data-field": "variance_reduction" }),
      cell(fmt.p(lift.decision_p_value), lift.decision_p_value, { "data-field": "decision_p_value" }),
      el("td", { "data-field": "verdict" }, verdict(lift)),
    ),
  );
  return el(
    "table",
    { id },
    head("arm", "metric", "lift", "95 % CI", "p", "always-valid CI", "CUPED lift", "CUPED always-valid CI", "variance removed", "decision p (Holm)", "verdict"),
    el("tbody", {}, rows),
  );
}

export function analysisNote(report) {
  const analysis = report.analysis;
  if (!analysis) return null;
  const cuped = analysis.cuped
    .map((m) => `${m.metric.toUpperCase()} ${m.applied ? `theta ${m.theta.toFixed(3)}, variance removed ${fmt.percent(m.variance_reduction, 1)}` : "not applied"}`)
    .join("; ");
  return el(
    "p",
    { class: "muted", id: "analysis" },
    `Decisions use always-valid intervals (a confidence sequence tightest at ${fmt.count(analysis.sequential_tuning_users)} users, alpha ${analysis.alpha}), `,
    `safe to look at every day; the fixed-horizon 95 % interval is valid only for one look at a planned end. `,
    `CUPED: each user's impressions and downloads in the ${analysis.cuped_lookback_days} days before their first day (users without history count as 0): ${cuped}. `,
    `Holm's correction over all ${report.lifts.length} arm × metric comparisons.`,
  );
}

export function dailyTable(report) {
  const rows = [];
  for (const day of [...report.daily].reverse()) {
    const users = Object.fromEntries(day.arms.map((arm) => [arm.arm, arm.users]));
    for (const lift of day.cumulative) {
      const best = lift.cuped || lift;
      rows.push(
        el(
          "tr",
          { "data-day": day.day, "data-arm": lift.arm, "data-metric": lift.metric },
          el("td", { text: day.day }),
          el("td", { text: lift.arm }),
          el("td", { text: lift.metric.toUpperCase() }),
          cell(fmt.count(users[lift.arm] ?? 0), users[lift.arm] ?? 0),
          cell(fmt.percent(best.lift), best.lift, { "data-field": "lift" }),
          cell(fmt.interval(best.sequential_ci), "", { "data-field": "sequential_ci" }),
          el("td", {}, verdict(lift)),
        ),
      );
    }
  }
  return el(
    "table",
    { id: "daily" },
    head("day", "arm", "metric", "users that day", "cumulative lift", "always-valid CI (as of that day)", "verdict that day"),
    el("tbody", {}, rows),
  );
}
