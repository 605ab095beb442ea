"""The pack's routes on the real ComfyUI server: the preview's answers and refusals, oversized
requests answered with the limit they pass while the server keeps serving others, and the example
workflows listed as templates. Needs ComfyUI's server requirements, not a browser. How fast the route
answers is measured by the benchmark, not asserted here.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import threading
import time

import pytest

from dit_layer_lab.core.preview import MAX_LINES, MAX_PREVIEW_STEPS, UNKNOWN_NOTE, preview_plan
from dit_layer_lab.server_routes import MAX_BODY, MAX_TEXT
from dit_layer_lab.tests.comfy import live_server

ROUTE = "/dit_layer_lab/preview"
WORKFLOWS = sorted((live_server.ROOT / "example_workflows").glob("*.json"))


@pytest.fixture(scope="module")
def server(servers):
    return servers.pinned()


def plan(double, single="all", counts=None):
    body = {"node_type": "LayerLabPlan", "inputs": {"double_blocks": double, "single_blocks": single}}
    return {**body, "counts": counts} if counts else body


def test_route_answers_over_http(server):
    texts = {"double_blocks": "0-2, 19", "single_blocks": "all"}
    for prefix in ("", "/api"):
        status, answer = server.post(prefix + ROUTE, {"node_type": "LayerLabPlan", "inputs": texts})
        assert status == 200 and answer == json.loads(json.dumps(preview_plan(texts, unknown=UNKNOWN_NOTE)))
    status, answer = server.post(ROUTE, {"node_type": "KSampler", "inputs": {}})
    assert status == 400 and "KSampler" in answer["error"]
    assert "LayerLabPlan" in server.get(ROUTE)["nodes"]
    assert "could not be added" not in server.log()  # the pack's own warning when registering fails


BIG = {"double_blocks": 1000, "single_blocks": 1000}
MEGABYTE_PLAN = plan("0-18, " * 175_000)
# name -> (body, expected status, a fragment of the answer: the 400's error, or the 200's plan error or refusal)
OVERSIZED = {
    "1 MB of plan text": (MEGABYTE_PLAN, 400, f"the preview reads at most {MAX_BODY}"),
    "plan text over the limit": (plan("1," * MAX_TEXT), 400, f"the preview reads at most {MAX_TEXT}"),
    "huge block counts": (plan("all", counts={"double_blocks": 10 ** 12, "single_blocks": 38}), 400,
                          "a whole number from 0 to 1000"),
    "deeply nested brackets": (plan("(" * (MAX_TEXT // 2) + ")" * (MAX_TEXT // 2)), 200,
                               "brackets nested deeper than 32"),
    "nested brackets over the limit": (plan("(" * 100_000 + "1" + ")" * 100_000), 400, f"at most {MAX_TEXT}"),
    "many grid lines": ({"node_type": "LayerLabPlanGrid",
                         "inputs": {"plans": "".join(f"l{i}: double_blocks=1\n" for i in range(400))}}, 200,
                        f"the preview checks at most {MAX_LINES}"),
    "grid lines of many steps": ({"node_type": "LayerLabPlanGrid", "counts": BIG, "inputs": {
        "plans": "".join(f"l{i}: double_blocks=all*10; single_blocks=all*10\n" for i in range(60))}}, 200,
        f"the preview computes at most {MAX_PREVIEW_STEPS}"),
    "huge strategy range": ({"node_type": "LayerLabShuffle", "inputs": {
        "stream": "double_blocks", "first": 0, "last": 10 ** 15, "seed": 10 ** 30, "start_percent": 0,
        "end_percent": 1}}, 200, "is out of range"),
    "deeply nested JSON": (b"[" * 200_000, 400, "nests too deeply"),
}


def _post_chunked(server, data: bytes, timeout: float):
    """POST without a Content-Length (chunked), as no frontend would."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        connection.request("POST", ROUTE, body=iter([data[i:i + 65536] for i in range(0, len(data), 65536)]),
                           headers={"Content-Type": "application/json"}, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_oversized_requests_are_answered_with_their_limit_while_the_server_serves_others(server):
    server.get("/object_info/LayerLabPlan")  # warm
    others, stop = [], threading.Event()
    failed = []

    def keep_asking():  # other clients of the server, all the while (at least one round)
        while True:
            for path in ("/system_stats", "/object_info/KSampler"):
                try:
                    server.get(path, timeout=30)
                    others.append(path)
                except Exception as error:  # reported below
                    failed.append((path, error))
            if stop.is_set():
                return
            time.sleep(0.05)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    answered = {}
    try:
        for name, (body, _, _) in OVERSIZED.items():
            answered[name] = server.post(ROUTE, body, timeout=30)
        answered["1 MB of plan text, chunked"] = _post_chunked(server, json.dumps(MEGABYTE_PLAN).encode(), timeout=30)
    finally:
        stop.set()
        asker.join()

    for name, (body, expected, fragment) in [*OVERSIZED.items(),
                                             ("1 MB of plan text, chunked", (None, 400, f"at most {MAX_BODY}"))]:
        status, answer = answered[name]
        assert status == expected, f"{name}: {status} {str(answer)[:300]}"
        text = answer["error"] if status == 400 else json.dumps(answer)
        assert fragment in text, f"{name}: {text[:300]}"
    assert failed == [] and len(others) >= 2
    assert server.post(ROUTE, plan("0-2"))[0] == 200  # and it still answers


def test_there_are_example_workflows():
    assert WORKFLOWS, "example_workflows/ has no .json file"


def test_example_workflows_are_listed_as_templates(server):
    listed = server.get("/workflow_templates").get(live_server.PACK_FOLDER, [])
    assert sorted(listed) == sorted(path.stem for path in WORKFLOWS)


MODEL_BLOCKS = "/dit_layer_lab/model_blocks"


@pytest.fixture(scope="module")
def model_files(server):
    """Files in the server's diffusion_models folder: a tiny Wan model and files that are not models."""
    import struct

    import comfy.utils
    from dit_layer_lab.tests.comfy import tiny_models as tm

    folder = server.base / "models" / "diffusion_models"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    wan = tm.tiny_wan(blocks=4).model.diffusion_model.state_dict()
    comfy.utils.save_torch_file({k: v.contiguous() for k, v in wan.items()}, str(folder / "sub" / "tiny_wan.safetensors"))
    (folder / "model.gguf").write_bytes(b"GGUF" + b"\0" * 64)  # version 0
    from dit_layer_lab.tests.comfy.test_model_blocks import write_gguf_header

    write_gguf_header(folder / "sub" / "tiny_wan.gguf", wan)
    (folder / "model.ckpt").write_bytes(b"PK\x03\x04" + b"\0" * 64)
    (folder / "truncated.safetensors").write_bytes(struct.pack("<Q", 5000) + b'{"a": {')
    (folder / "huge.safetensors").write_bytes(struct.pack("<Q", 2 ** 40) + b"{}")
    (folder / "not_a_model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    (server.base / "outside.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    return folder


def test_model_blocks_of_a_file_in_the_model_folders(server, model_files):
    for prefix in ("", "/api"):
        status, answer = server.post(prefix + MODEL_BLOCKS, {"loader": "UNETLoader", "name": "sub/tiny_wan.safetensors"})
        assert status == 200 and answer["known"], answer
        assert answer["family"] == "Wan" and answer["counts"] == {"double_blocks": 0, "single_blocks": 4}
        assert answer["list_names"] == {"single_blocks": "blocks"}
    assert server.get(ROUTE)["loaders"]["UNETLoader"] == "unet_name"
    # a GGUF file's tensor table, for ComfyUI-GGUF's loader (found in diffusion_models without the pack)
    status, answer = server.post(MODEL_BLOCKS, {"loader": "UnetLoaderGGUF", "name": "sub/tiny_wan.gguf"})
    assert status == 200 and (answer["family"], answer["counts"]["single_blocks"]) == ("Wan", 4), answer


# name -> (body, status, a fragment of the error): 400 for a request the strip never sends, else an answer
# that the counts are not known, and why
BAD_MODEL_REQUESTS = {
    "outside the model folders": ({"loader": "UNETLoader", "name": "../../outside.safetensors"}, 200,
                                  "is not a file in ComfyUI's diffusion_models model folders"),
    "an absolute path": ({"loader": "UNETLoader", "name": "/etc/hostname"}, 200, "is not a file in ComfyUI's"),
    "a file not there": ({"loader": "CheckpointLoaderSimple", "name": "missing.safetensors"}, 200,
                         "checkpoints model folders"),
    "an unknown loader": ({"loader": "KSampler", "name": "x"}, 400, "known: UNETLoader, CheckpointLoaderSimple"),
    "a name that is not text": ({"loader": "UNETLoader", "name": ["a"]}, 400, "'name' is a model file name"),
    "no loader": ({"name": "x"}, 400, "\"loader\": one of UNETLoader"),
    "not JSON": (b"{nope", 400, "not JSON"),
    "a large body": ({"loader": "UNETLoader", "name": "x" * 10_000}, 400, "a model_blocks request is at most 4096"),
    "an old GGUF": ({"loader": "UnetLoaderGGUF", "name": "model.gguf"}, 200,
                    "model.gguf is a GGUF file of version 0; versions 2 and 3 are read"),
    "a pickle checkpoint": ({"loader": "UNETLoader", "name": "model.ckpt"}, 200, "model.ckpt is not a safetensors"),
    "a truncated header": ({"loader": "UNETLoader", "name": "truncated.safetensors"}, 200, "is truncated"),
    "a huge header length": ({"loader": "UNETLoader", "name": "huge.safetensors"}, 200,
                             "the header is read up to 104857600 bytes"),
    "no model in it": ({"loader": "UNETLoader", "name": "not_a_model.safetensors"}, 200,
                       "ComfyUI does not recognise a diffusion model in not_a_model.safetensors"),
}


@pytest.mark.parametrize("name", list(BAD_MODEL_REQUESTS))
def test_model_blocks_refuses_bad_input_with_the_reason(server, model_files, name):
    body, expected, fragment = BAD_MODEL_REQUESTS[name]
    status, answer = server.post(MODEL_BLOCKS, body)
    assert status == expected, answer
    assert answer == ({"error": answer["error"]} if status == 400 else {"known": False, "error": answer["error"]})
    assert fragment in answer["error"]
