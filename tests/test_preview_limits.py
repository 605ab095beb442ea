"""The preview route's bounds: every request is answered quickly, with a result or a 400 naming the limit.

The route serves ComfyUI's server, so no request may keep it busy: what a request carries (the
body, each text input, the block counts) is bounded, beyond which it gets a 400; what one answer
computes (plan lines, steps) is bounded, beyond which the answer says why in "refused"; and the
work runs off the server's event loop (checked with aiohttp, which ComfyUI brings; skipped without it).
"""

import asyncio
import json
import threading

import pytest

from dit_layer_lab import server_routes
from dit_layer_lab.core.plan import MAX_STEPS
from dit_layer_lab.core.preview import MAX_LINES, MAX_PREVIEW_STEPS, UNKNOWN_NOTE, preview_plan
from dit_layer_lab.core.model_blocks import MAX_NAME
from dit_layer_lab.server_routes import MAX_BODY, MAX_TEXT

FLUX = {"double_blocks": 19, "single_blocks": 38}
BIG = {"double_blocks": 1000, "single_blocks": 1000}


def plan(double, single="all", counts=None):
    body = {"node_type": "LayerLabPlan", "inputs": {"double_blocks": double, "single_blocks": single}}
    return {**body, "counts": counts} if counts else body


def grid(text, counts=None):
    body = {"node_type": "LayerLabPlanGrid", "inputs": {"plans": text}}
    return {**body, "counts": counts} if counts else body


def refused(body) -> str:
    with pytest.raises(server_routes.BadRequest) as raised:
        server_routes.answer(body)
    return str(raised.value)


def test_a_text_input_longer_than_the_limit_is_refused_naming_the_limit():
    message = refused(plan("0," * MAX_TEXT))
    assert f"input 'double_blocks' is {2 * MAX_TEXT} characters long; the preview reads at most {MAX_TEXT}" == message
    assert f"at most {MAX_TEXT}" in refused(grid("a: double_blocks=1\n" * MAX_TEXT))
    assert f"at most {MAX_TEXT}" in refused({"node_type": "LayerLabLoraBlocks",
                                             "inputs": {"double_blocks": "all", "single_blocks": " " * (MAX_TEXT + 1)}})
    # at the limit the text is read, and a plan error is an answer, not a refusal
    answer = server_routes.answer(plan(("(" * 40 + "1" + ")" * 40).ljust(MAX_TEXT)))
    assert "brackets nested deeper than 32" in answer["streams"][0]["error"]["message"]


def test_more_plan_lines_than_the_limit_are_not_previewed_and_the_answer_says_why():
    lines = "".join(f"line {i}: double_blocks={i % 19}\n" for i in range(MAX_LINES))
    answer = server_routes.answer(grid(lines))
    assert len(answer["lines"]) == MAX_LINES and answer["refused"] is None
    answer = server_routes.answer(grid(lines + "# a comment\n\none more: single_blocks=x\n"))
    assert answer["ok"] is False and answer["lines"] == []
    assert answer["refused"] == f"plans has {MAX_LINES + 1} plan lines; the preview checks at most {MAX_LINES}"


def test_more_steps_than_the_limit_are_not_previewed_and_the_answer_says_why():
    # a Plan node's two streams at the plan limit are previewed
    answer = server_routes.answer(plan("all*10", "all*10", BIG))
    assert answer["ok"] and [s["steps"] for s in answer["streams"]] == [MAX_STEPS, MAX_STEPS]
    assert answer["streams"][0]["more_cells"] == 10 * 1000 - 256
    # plan grid lines count together
    lines = "".join(f"line {i}: double_blocks=all*10\n" for i in range(3))
    answer = server_routes.answer(grid(lines, BIG))
    assert answer["ok"] is False and answer["lines"] == [] and answer["counts"] == BIG
    assert answer["refused"] == (f"these plans run more than {MAX_PREVIEW_STEPS} steps in all; "
                                 f"the preview computes at most {MAX_PREVIEW_STEPS}")
    assert server_routes.answer(grid(lines))["ok"]  # with Flux's 19 blocks the same lines are small


def test_get_tells_the_frontend_the_request_limits():
    assert server_routes.describe()["limits"] == {"max_body": MAX_BODY, "max_text": MAX_TEXT, "max_name": MAX_NAME}
    # the loader node types whose file the strip asks about, and the widget that names the file
    assert server_routes.describe()["loaders"] == {"UNETLoader": "unet_name", "CheckpointLoaderSimple": "ckpt_name",
                                                   "UnetLoaderGGUF": "unet_name"}


def test_error_messages_quote_a_bad_value_briefly():
    message = refused(plan(list(range(10_000))))
    assert message.startswith("input 'double_blocks' is text, got [0, 1, 2") and len(message) < 150
    assert len(refused({"node_type": "x" * 10_000, "inputs": {}})) < 400
    assert len(refused(plan("all", counts={"double_blocks": [0] * 10_000}))) < 200


@pytest.mark.parametrize("raw, status, fragment", [
    (b"x" * (MAX_BODY + 1), 400, f"the request body is {MAX_BODY + 1} bytes; the preview reads at most {MAX_BODY}"),
    (b"{not json", 400, "the request body is not JSON"),
    (b"\xff\xfe", 400, "the request body is not JSON"),
    (b"[" * 100_000, 400, "the request body nests too deeply"),
    (json.dumps(plan("0" * (MAX_TEXT + 1))).encode(), 400, f"at most {MAX_TEXT}"),
    (json.dumps(plan("0-2, 7")).encode(), 200, None),
])
def test_respond_answers_every_body_with_a_result_or_the_reason(raw, status, fragment):
    code, answer = server_routes.respond(raw)
    assert code == status
    if fragment:
        assert fragment in answer["error"]
    else:
        assert answer == json.loads(json.dumps(preview_plan({"double_blocks": "0-2, 7", "single_blocks": "all"},
                                                            unknown=UNKNOWN_NOTE)))


# The heaviest requests within the limits: each gets a full answer (how fast is not a test's business).
HEAVIEST = {
    "two plans at the step limit": plan("all*10", "all*10", BIG),
    "two plans of single blocks": plan(", ".join(str(i % 1000) for i in range(3000))[:MAX_TEXT],
                                       ", ".join(str(i % 1000) for i in range(3000))[:MAX_TEXT], BIG),
    "nested brackets": plan("(" * (MAX_TEXT // 2) + ")" * (MAX_TEXT // 2)),
    "grid lines at the limit": grid("".join(f"l{i}: double_blocks=" + ", ".join(str(j % 19) for j in range(60))
                                            + "\n" for i in range(MAX_LINES))[:MAX_TEXT]),
    "grid steps at the limit": grid("a: double_blocks=all*10\nb: single_blocks=all*10\n", BIG),
    "selection of every block": {"node_type": "LayerLabLoraBlocksSave", "counts": BIG, "inputs": {
        "double_blocks": ", ".join(str(i) for i in range(1000))[:MAX_TEXT], "single_blocks": "all"}},
    "strategy on the largest model": {"node_type": "LayerLabShuffle", "counts": BIG, "inputs": {
        "stream": "single_blocks", "first": 0, "last": 999, "seed": 2 ** 63, "start_percent": 0, "end_percent": 1}},
}


@pytest.mark.parametrize("name", HEAVIEST)
def test_the_heaviest_requests_within_the_limits_are_answered(name):
    raw = json.dumps(HEAVIEST[name]).encode()
    assert len(raw) <= MAX_BODY
    status, answer = server_routes.respond(raw)
    assert (status == 200 and answer["refused"] is None) or "at most" in (answer.get("error") or answer["refused"])
    assert len(json.dumps(answer)) < 1_000_000


# ---------------------------------------------------------------------------- the route in aiohttp


def _serve(check):
    """Run ``check(client)`` against an aiohttp app with the pack's routes."""
    pytest.importorskip("aiohttp")
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def main():
        routes = web.RouteTableDef()
        server_routes.register(routes)
        app = web.Application()
        app.add_routes(routes)
        async with TestClient(TestServer(app)) as client:
            await check(client)

    asyncio.run(main())


def test_the_route_works_off_the_event_loop(monkeypatch):
    computing, release = threading.Event(), threading.Event()

    def blocked(body):  # stands in for a long computation: it ends only when the test says so
        computing.set()
        release.wait(30)
        return {"slow": True}

    monkeypatch.setattr(server_routes, "answer", blocked)

    async def check(client):
        post = asyncio.ensure_future(client.post(server_routes.PATH, data=json.dumps(plan("all"))))
        while not computing.is_set():
            await asyncio.sleep(0.01)
        # served while the POST's computation is still blocked: on the event loop it would wait 30 s for it
        response = await client.get(server_routes.PATH)
        assert response.status == 200 and not release.is_set() and not post.done()
        release.set()
        response = await post
        assert response.status == 200 and await response.json() == {"slow": True}

    try:
        _serve(check)
    finally:
        release.set()


def test_the_route_refuses_a_large_body_without_reading_it():
    async def check(client):
        response = await client.post(server_routes.PATH, data=b" " * (MAX_BODY + 1))
        assert response.status == 400
        assert (await response.json())["error"] == (f"the request body is {MAX_BODY + 1} bytes; "
                                                    f"the preview reads at most {MAX_BODY}")

        async def chunks():  # no Content-Length: reading stops at the limit
            for _ in range(64):
                yield b" " * 65536

        response = await client.post(server_routes.PATH, data=chunks())
        assert response.status == 400 and f"at most {MAX_BODY}" in (await response.json())["error"]
        response = await client.post(server_routes.PATH, data=json.dumps(plan("0-2, 19", counts=FLUX)))
        assert response.status == 200 and not (await response.json())["ok"]

    _serve(check)
