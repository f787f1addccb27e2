"""The web console in a real browser (headless Chromium driven by Playwright) against a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.console.conftest import EXPERIMENT, Service
from tests.service.conftest import ADMIN, rank_body

pytestmark = pytest.mark.slow


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context per test: a new session, so no admin token yet."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, errors


def visit(page: Page, service: Service, path: str) -> None:
    page.goto(f"{service.url}{path}")
    page.wait_for_selector("body[data-ready=true]")


def shoot(page: Page, service: Service, name: str) -> None:
    """A full-page screenshot once the page (and its chart, where it has one) has loaded."""
    for chart in page.locator("#chart").all():
        expect(chart).to_have_js_property("complete", True)
    page.screenshot(path=str(service.shots / f"{name}.png"), full_page=True)


def fill_token(page: Page, token: str | None) -> None:
    """Answer the token dialog: enter ``token``, or cancel it when None."""
    dialog = page.locator("#token-dialog")
    expect(dialog).to_be_visible()
    if token is None:
        dialog.get_by_role("button", name="Cancel").click()
    else:
        page.fill("#token-input", token)
        page.click("#token-submit")


def experiment(service: Service) -> dict[str, Any]:
    answer = httpx.get(f"{service.url}/experiments/{EXPERIMENT}")
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


def percent(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def interval(ci: dict[str, float | None], digits: int = 2, scale: float = 100, unit: str = " %") -> str:
    low, high = ci["low"], ci["high"]
    if low is None or high is None:
        return "–"
    return f"[{scale * low:.{digits}f}, {scale * high:.{digits}f}]{unit}"


def p_text(value: float | None) -> str:
    return "–" if value is None else "<0.0001" if value < 0.0001 else f"{value:.4f}"


def cell(page: Page, row: str, name: str) -> str:
    return page.locator(f"{row} [data-field={name}]").inner_text().strip()


def test_experiments_list_shows_arms_users_and_the_split_check(page: Page, service: Service) -> None:
    visit(page, service, "/ui")
    row = page.locator(f"tr[data-experiment={EXPERIMENT}]")
    expect(row).to_contain_text("running")
    expect(row).to_contain_text("control (control): 50 % · lr")
    report = httpx.get(f"{service.url}/experiments/{EXPERIMENT}/report").json()
    for arm in report["arms"]:
        expect(row).to_contain_text(f"{arm['arm']}: {arm['users']:,}")
    shoot(page, service, "experiments")


def test_report_page_shows_the_json_reports_numbers(page: Page, service: Service) -> None:
    visit(page, service, f"/ui/experiments/{EXPERIMENT}")
    report = httpx.get(f"{service.url}/experiments/{EXPERIMENT}/report").json()
    for arm in report["arms"]:
        row = f"#arms tr[data-arm={arm['arm']}]"
        assert cell(page, row, "users") == f"{arm['users']:,}"
        assert cell(page, row, "impressions") == f"{arm['impressions']:,}"
        assert cell(page, row, "ctr") == percent(arm["ctr"], 3)
        assert cell(page, row, "ctr_ci") == interval(arm["ctr_ci"], 3)
        assert cell(page, row, "ctr_sequential_ci") == interval(arm["ctr_sequential_ci"], 3)
        assert cell(page, row, "cvr") == f"{arm['cvr']:.4f}"
        assert cell(page, row, "cvr_sequential_ci") == interval(arm["cvr_sequential_ci"], 4, 1, "")
        assert (
            float(page.locator(f"{row} [data-field=ctr]").get_attribute("data-value") or "nan") == arm["ctr"]
        )
    assert report["lifts"], "the seeded experiment has lifts"
    for lift in report["lifts"]:
        row = f"#lifts tr[data-arm={lift['arm']}][data-metric={lift['metric']}]"
        assert cell(page, row, "lift") == percent(lift["lift"])
        assert cell(page, row, "ci") == interval(lift["ci"])
        assert cell(page, row, "p_value") == p_text(lift["p_value"])
        assert cell(page, row, "sequential_ci") == interval(lift["sequential_ci"])
        assert cell(page, row, "cuped_lift") == percent(lift["cuped"]["lift"])
        assert cell(page, row, "cuped_sequential_ci") == interval(lift["cuped"]["sequential_ci"])
        assert cell(page, row, "decision_p_value") == p_text(lift["decision_p_value"])
        verdict = cell(page, row, "verdict")
        assert verdict.startswith("conclusive") if lift["conclusive"] else verdict == "keep running"
    banner = page.locator("#srm")
    expect(banner).to_have_class("banner srm" if report["srm"]["flagged"] else "banner ok")
    rows = sum(len(day["cumulative"]) for day in report["daily"])
    expect(page.locator("#daily tbody tr")).to_have_count(rows)
    chart = page.locator("#chart")
    expect(chart).to_have_js_property("complete", True)
    assert chart.bounding_box() is not None
    svg = httpx.get(f"{service.url}/experiments/{EXPERIMENT}/report.svg")
    assert (
        svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content
    )
    shoot(page, service, "experiment")


def test_changes_are_refused_without_the_token(page: Page, service: Service) -> None:
    before = experiment(service)
    visit(page, service, f"/ui/experiments/{EXPERIMENT}")
    page.fill("[name='arms.0.weight']", "40")
    page.fill("[name='arms.1.weight']", "60")
    page.click("#save")
    fill_token(page, None)
    expect(page.locator("[data-error-for='']")).to_contain_text("Refused (401)")
    page.click("#save")
    fill_token(page, "not-a-token")
    expect(page.locator("[data-error-for='']")).to_contain_text("Refused (403)")
    assert experiment(service)["version"] == before["version"]
    assert [arm["weight"] for arm in experiment(service)["arms"]] == [arm["weight"] for arm in before["arms"]]


def test_a_bad_weight_is_shown_beside_its_field(page: Page, service: Service) -> None:
    before = experiment(service)
    visit(page, service, f"/ui/experiments/{EXPERIMENT}")
    page.fill("[name='arms.1.weight']", "50.001")
    page.click("#save")
    fill_token(page, "secret-a")
    beside = page.locator("[data-error-for='arms.1.weight']")
    expect(beside).to_contain_text("more than two decimals")
    expect(page.locator("[name='arms.1.weight']")).to_have_class("invalid")
    expect(page.locator("[data-error-for='arms.0.weight']")).to_have_text("")
    shoot(page, service, "bad-weight")
    page.fill("[name='arms.1.weight']", "60")  # now a sum that is not 100: the arms as a whole
    page.click("#save")
    expect(page.locator("[data-error-for='arms']")).to_contain_text("weights must sum to 100")
    page.fill("[name='arms.1.weight']", "50")
    page.fill("[name='coverage']", "abc")
    page.click("#save")
    expect(page.locator("[data-error-for='coverage']")).to_contain_text("valid number")
    assert experiment(service)["version"] == before["version"]


def test_a_split_changed_in_the_page_reaches_rank_and_the_audit_trail(page: Page, service: Service) -> None:
    visit(page, service, f"/ui/experiments/{EXPERIMENT}")
    version = experiment(service)["version"]
    page.fill("[name='arms.0.weight']", "0")
    page.fill("[name='arms.1.weight']", "100")
    page.click("#save")
    fill_token(page, "secret-a")
    expect(page.locator("#change-status")).to_contain_text(f"Saved: version {version + 1}")
    deadline = time.monotonic() + 10
    while True:
        arms = {
            httpx.post(f"{service.url}/rank", json=rank_body(3, user=f"u{i}")).json()["arm"]
            for i in range(30)
        }
        if arms == {"treatment"} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert arms == {"treatment"}
    page.wait_for_selector("body[data-ready=true]")
    page.fill("[name='coverage']", "80")  # a second change in the same session: no token asked
    page.click("#save")
    expect(page.locator("#change-status")).to_contain_text(f"Saved: version {version + 2}")
    expect(page.locator("#token-dialog")).to_be_hidden()
    latest = page.locator("#audit tbody tr").first
    expect(latest.locator(".actor")).to_have_text("alice")
    expect(latest).to_contain_text("coverage: 100 % → 80 %")
    split = page.locator("#audit tbody tr").nth(1)
    expect(split).to_contain_text(
        "arms: control 50 % (lr), treatment 50 % (lr2) → control 0 % (lr), treatment 100 % (lr2)"
    )
    shoot(page, service, "changed")
    httpx.put(
        f"{service.url}/experiments/{EXPERIMENT}", json=_fifty_fifty(), headers=ADMIN
    ).raise_for_status()


def _fifty_fifty() -> dict[str, Any]:
    from tests.service.conftest import fifty_fifty

    return fifty_fifty()


def test_models_page_lists_bundles_versions_and_who_serves_them(page: Page, service: Service) -> None:
    visit(page, service, "/ui/models")
    models = httpx.get(f"{service.url}/models").json()
    for model in models:
        row = page.locator(f"tr[data-model={model['name']}]")
        expect(row.locator(".version")).to_have_text(model["version"])
        expect(row).to_contain_text(f"{EXPERIMENT}/")
    shoot(page, service, "models")
