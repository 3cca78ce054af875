"""The floor: a bare async HTTP client doing the plugin's requests.

Started by ``run.py`` in its own process, with the plugin's interpreter,
against the same loopback server and latency, in the same benchmark run.
For each sample it reads the image bytes from the same parquet file (row
group by row group, in small batches, as the plugin does), sends the model
request (the image as a base64 data URI, then the instruction, as the
plugin's body) and, once the reply is in, the judge request: a text prompt of
the size the plugin's default protocol (evalscope) builds, holding the
instruction, the components and the model's reply.  At most
``--concurrency`` samples are in flight; a new one starts as one ends.

It uses the HTTP client the installed openai is built on (``httpx2`` for
openai 3.x, else ``httpx``) with openai's default pool limits and timeout,
and no image work: the stored bytes go out as they are (the plugin shrinks
the four 16 MP photos, so the floor sends more bytes, not fewer).

With ``--client sdk`` it sends the same requests through the openai SDK's
typed call instead (``chat.completions.with_raw_response.create``, the call
the plugin makes, no retries), on the same pool: the difference between the
two floors is what the SDK itself costs per request, which the plugin pays
by design ("calls through the SDK's typed API").

Prints one JSON line: the client used, samples done, failures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from typing import Any

# The evalscope protocol's judge prompt is its fixed text plus the
# instruction, the components and the reply; the fixed text is 688, 757,
# 830 and 899 characters for 2-5 components (the 400 real rows).
JUDGE_FIXED_CHARS = 550
JUDGE_CHARS_PER_COMPONENT = 69
JUDGE_SETTINGS = {"temperature": 0.0, "max_tokens": 4096}  # the evalscope protocol's
SLOT = "floor-image-slot"


def http_module() -> Any:
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx  # type: ignore[no-redef]
    return httpx


def mime_of(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"  # MPO too: its first frame is a JPEG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    return "application/octet-stream"


def model_body(model: str, instruction: str, image: bytes) -> bytes:
    """The plugin's model body: JSON with the data URI spliced in as bytes."""
    content = [{"type": "image_url", "image_url": {"url": SLOT}}, {"type": "text", "text": instruction}]
    data = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]}).encode("ascii")
    uri = b"data:" + mime_of(image).encode("ascii") + b";base64," + base64.b64encode(image)
    return data.replace(b'"' + SLOT.encode("ascii") + b'"', b'"' + uri + b'"')


def judge_body(model: str, instruction: str, components: list[str], reply: str) -> bytes:
    """A text judge prompt of the size the plugin's default protocol sends."""
    prompt = judge_prompt(instruction, components, reply)
    params = {"model": model, "messages": [{"role": "user", "content": prompt}], **JUDGE_SETTINGS}
    return json.dumps(params).encode("ascii")


def model_messages(instruction: str, image: bytes) -> list[dict[str, Any]]:
    uri = "data:" + mime_of(image) + ";base64," + base64.b64encode(image).decode("ascii")
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": instruction}]}]


def judge_prompt(instruction: str, components: list[str], reply: str) -> str:
    fixed = JUDGE_FIXED_CHARS + JUDGE_CHARS_PER_COMPONENT * len(components)
    return " ".join([instruction, *components, reply]) + " " + "x" * max(0, fixed - len(components) - 2)


def reply_text(response: Any) -> str:
    response.raise_for_status()
    return str(json.loads(response.content)["choices"][0]["message"]["content"] or "")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import pyarrow.parquet as pq

    httpx = http_module()
    pf = pq.ParquetFile(args.dataset, buffer_size=1 << 20, pre_buffer=False)
    text = pf.read(columns=["instruction", "components"]).to_pylist()[: args.samples]
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)  # openai's defaults
    headers = {"Content-Type": "application/json", "Authorization": "Bearer EMPTY"}
    url = args.base_url.rstrip("/") + "/chat/completions"
    failures: list[str] = []
    done = 0
    slots = asyncio.Semaphore(args.concurrency)

    async def bare(row: dict[str, Any], image: bytes) -> None:
        answer = reply_text(await client.post(url, content=model_body(args.model, row["instruction"], image), headers=headers))
        body = judge_body(args.judge_model, row["instruction"], list(row["components"]), answer)
        reply_text(await client.post(url, content=body, headers=headers))

    async def sdk(row: dict[str, Any], image: bytes) -> None:
        chat = sdk_client.chat.completions.with_raw_response
        raw = await chat.create(model=args.model, messages=model_messages(row["instruction"], image))  # type: ignore[arg-type]
        answer = raw.parse().choices[0].message.content or ""
        prompt = judge_prompt(row["instruction"], list(row["components"]), answer)
        raw = await chat.create(
            model=args.judge_model, messages=[{"role": "user", "content": prompt}],
            temperature=JUDGE_SETTINGS["temperature"], max_tokens=int(JUDGE_SETTINGS["max_tokens"]),
        )  # fmt: skip
        raw.parse().choices[0].message.content  # noqa: B018 - parsed as the plugin parses it

    one = sdk if args.client == "sdk" else bare

    async def sample(index: int, image: bytes) -> None:
        nonlocal done
        try:
            await one(text[index], image)
            done += 1
        except Exception as exc:  # counted and reported; a floor that fails is no floor
            failures.append(f"{index}: {type(exc).__name__}: {exc}")
        finally:
            slots.release()

    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600, connect=5.0)) as client:
        if args.client == "sdk":
            import openai

            sdk_client = openai.AsyncOpenAI(api_key="EMPTY", base_url=args.base_url, max_retries=0, http_client=client)
        tasks = set()
        index = 0
        for batch in pf.iter_batches(batch_size=8, columns=["image"]):
            for value in batch.column(0).to_pylist():
                if index >= args.samples:
                    break
                await slots.acquire()
                task = asyncio.create_task(sample(index, value["bytes"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += 1
            if index >= args.samples:
                break
        await asyncio.gather(*list(tasks))
    return {
        "client": f"{httpx.__name__} {httpx.__version__} AsyncClient" + (" via openai's typed call" if args.client == "sdk" else ""),
        "samples": index,
        "done": done,
        "failures": len(failures),
        "first_failures": failures[:5],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="the parquet file the plugin reads")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--judge-model", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--samples", type=int, required=True)
    parser.add_argument("--result", required=True, help="where to write the JSON summary")
    parser.add_argument("--client", choices=["bare", "sdk"], default="bare", help="bare httpx posts, or the openai SDK's typed call")
    args = parser.parse_args(argv)
    summary = asyncio.run(run(args))
    with open(args.result, "w", encoding="utf-8") as sink:
        json.dump(summary, sink)
    return 0 if summary["failures"] == 0 and summary["done"] == args.samples else 1


if __name__ == "__main__":
    sys.exit(main())
