"""LLM rewriting end to end: CAR and query2doc against a real OpenAI-style HTTP server on loopback, HyDE with a
tiny local causal LM; the cache makes re-runs free and resumable; failures leave no output; the key never leaks."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from peft_ir.cli import main
from peft_ir.data import TrainingExample, read_topics, read_training, write_training
from peft_ir.errors import PeftIRError
from peft_ir.rewrite.cache import RewriteCache, cache_key
from peft_ir.rewrite.car import car_prompt, clean_rewrite
from peft_ir.rewrite.expansion import expand_query, prompt_for
from peft_ir.rewrite.llm import OpenAIChatBackend, TransformersBackend, generate_all

SECRET = "sk-test-Zq8Yv3-do-not-leak-4242"


def field(prompt: str, name: str) -> str:
    for line in prompt.splitlines():
        if line.startswith(f"{name}: "):
            return line[len(name) + 2:]
    return ""


def reply_for(prompt: str) -> str:
    """The loopback model: deterministic answers derived from the prompt."""
    if "Rewritten query:" in prompt:  # CAR
        first_word = field(prompt, "Passage").split()[0].strip(".,").lower()
        return f'Rewritten query: "{field(prompt, "Query")} regarding {first_word}"\n(I kept the intent.)'
    return f"A passage about {field(prompt, 'Query') or field(prompt, 'Question')}."


class ChatServer:
    """POST /v1/chat/completions on 127.0.0.1 (ephemeral port), counting requests; failures can be scripted."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.statuses: list[int] = []  # answered (in order) before any normal reply
        self.fail: Callable[[str], int | None] = lambda prompt: None
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with server.lock:
                    server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                            "body": body})
                    status = server.statuses.pop(0) if server.statuses else server.fail(prompt)
                if self.path != "/v1/chat/completions":
                    status = 404
                if status is not None:
                    # a hostile server that echoes the credential back in its error body
                    data = json.dumps({"error": f"failed for {self.headers.get('Authorization')}"}).encode()
                    self.send_response(status)
                    if status in (301, 302, 303, 307, 308):  # following it would succeed (and resend the key)
                        self.send_header("Location", "/v1/chat/completions")
                else:
                    data = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply_for(prompt)},
                         "finish_reason": "stop"}]}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def count(self) -> int:
        return len(self.requests)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    s = ChatServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return SECRET


def synthetic_train(path: Path, n: int = 5) -> list[TrainingExample]:
    examples = [TrainingExample(f"query number {i}", [f"Topic{i} passage that answers query {i}."],
                                [f"unrelated negative {i}a", f"unrelated negative {i}b"]) for i in range(n)]
    write_training(examples, path)
    return examples


def car_args(server: ChatServer, train: Path, out: Path, *extra: str) -> list[str]:
    return ["-v", "rewrite", "car", "--train", str(train), "--output", str(out), "--base-url", server.url,
            "--model", "tiny-chat", "--max-retries", "1", "--backoff", "0.01", "--timeout", "10", *extra]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_car_end_to_end_on_real_training_sample(server, key, shared_data, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    train = tmp_path / "train.jsonl"
    lines = (shared_data / "msmarco-train-sample" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:5]
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    original = list(read_training(train))
    out, cache = tmp_path / "car.jsonl", tmp_path / "cache.jsonl"

    assert main(car_args(server, train, out, "--cache", str(cache))) == 0
    rewritten = list(read_training(out))
    assert server.count == 5
    assert len(rewritten) == 5
    for ex, new in zip(original, rewritten):
        first = ex.positives[0].split()[0].strip(".,").lower()
        assert new.query == f"{ex.query} regarding {first}"  # the cleaned first line of the reply
        assert new.positives == ex.positives and new.negatives == ex.negatives
    # what reached the server: the key as a bearer token, the model, the query and its relevant passage
    for req, ex in zip(server.requests, original):
        assert req["auth"] == f"Bearer {SECRET}"
        assert req["body"]["model"] == "tiny-chat" and req["body"]["temperature"] == 0.0
        prompt = req["body"]["messages"][-1]["content"]
        assert ex.query in prompt and " ".join(ex.positives[0].split())[:200] in prompt

    # second run: everything from the cache, the server is not contacted
    out2 = tmp_path / "car2.jsonl"
    assert main(car_args(server, train, out2, "--cache", str(cache))) == 0
    assert server.count == 5
    assert out2.read_bytes() == out.read_bytes()
    entries = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(entries) == 5 and all(set(e) == {"key", "model", "output"} for e in entries)

    # the key appears nowhere: cache, outputs, logs, console
    printed = capsys.readouterr()
    for text in (cache.read_text(), out.read_text(), out2.read_text(), caplog.text, printed.out, printed.err):
        assert SECRET not in text
    assert "tiny-chat" in caplog.text  # the logs were captured at all


def test_car_keeps_shape_and_original_with_workers(server, key, tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("what is aspirin\tAspirin reduces fever.\tJupiter is big.\n"
                     "define sri\tSri is an honorific in Sanskrit.\tStanford Research Institute.\n")
    out = tmp_path / "car.tsv"
    assert main(car_args(server, train, out, "--workers", "3", "--keep-original")) == 0
    assert out.read_text().splitlines() == [
        "what is aspirin\tAspirin reduces fever.\tJupiter is big.",
        "what is aspirin regarding aspirin\tAspirin reduces fever.\tJupiter is big.",
        "define sri\tSri is an honorific in Sanskrit.\tStanford Research Institute.",
        "define sri regarding sri\tSri is an honorific in Sanskrit.\tStanford Research Institute.",
    ]
    assert server.count == 2
    assert Path(f"{out}.llm-cache.jsonl").is_file()  # default cache beside the output


def test_unreachable_endpoint_is_a_clean_error_and_writes_nothing(key, tmp_path, capsys):
    train, out = tmp_path / "train.jsonl", tmp_path / "out.jsonl"
    synthetic_train(train)
    url = f"http://127.0.0.1:{closed_port()}/v1"
    code = main(["rewrite", "car", "--train", str(train), "--output", str(out), "--base-url", url, "--model", "m",
                 "--max-retries", "2", "--backoff", "0.01"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unreachable" in err and url in err and "3 attempt" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]  # no output, no temp file, no cache
    with pytest.raises(PeftIRError, match="unreachable"):
        OpenAIChatBackend(url, "m", max_retries=0).generate("hello")


def test_missing_key_is_a_clean_error(server, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    train, out = tmp_path / "train.jsonl", tmp_path / "out.jsonl"
    synthetic_train(train)
    assert main(car_args(server, train, out, "--api-key-env", "MY_LLM_KEY")) == 2
    assert "MY_LLM_KEY" in capsys.readouterr().err
    assert not out.exists() and server.count == 0
    monkeypatch.setenv("MY_LLM_KEY", "")
    with pytest.raises(PeftIRError, match="MY_LLM_KEY"):
        OpenAIChatBackend(server.url, "m", api_key_env="MY_LLM_KEY")
    # the key itself pasted where the variable's name belongs: refused without being echoed
    assert main(car_args(server, train, out, "--api-key-env", SECRET)) == 2
    err = capsys.readouterr().err
    assert "name* of an environment variable" in err and SECRET not in err


def test_failure_midway_writes_no_output_and_the_rerun_resumes(server, key, tmp_path, capsys):
    train, out, cache = tmp_path / "train.jsonl", tmp_path / "out.jsonl", tmp_path / "cache.jsonl"
    synthetic_train(train, 5)
    server.fail = lambda prompt: 500 if "query number 3" in prompt else None
    assert main(car_args(server, train, out, "--cache", str(cache))) == 2
    assert "HTTP 500" in capsys.readouterr().err
    assert not out.exists()
    assert server.count == 3 + 2  # three successes, then two attempts (one retry) on the fourth example
    assert len(cache.read_text().splitlines()) == 3  # what succeeded is kept for the next run
    server.fail = lambda prompt: None
    assert main(car_args(server, train, out, "--cache", str(cache))) == 0
    assert server.count == 5 + 2  # only the two missing rewrites were requested
    assert [ex.query for ex in read_training(out)] == [f"query number {i} regarding topic{i}" for i in range(5)]


def test_retries_on_5xx_then_succeeds_and_4xx_fails_at_once_without_leaking(server, key):
    sleeps: list[float] = []
    backend = OpenAIChatBackend(server.url, "m", max_retries=3, backoff=0.5, sleep=sleeps.append)
    server.statuses = [503, 502]
    assert backend.generate("Query: hello\nPassage:") == "A passage about hello."
    assert server.count == 3 and sleeps == [0.5, 1.0]  # exponential backoff
    server.statuses = [401]
    with pytest.raises(PeftIRError) as info:
        backend.generate("Query: x")
    assert server.count == 4  # no retry on 401
    assert "401" in str(info.value) and SECRET not in str(info.value) and "***" in str(info.value)
    assert SECRET not in repr(backend)
    server.statuses = [302]
    with pytest.raises(PeftIRError, match="302"):
        backend.generate("Query: x")
    assert server.count == 5  # the redirect was not followed


def test_query2doc_expansion_over_http(server, key, tmp_path):
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\twhat is aspirin\nq2\tdefine sri\n")
    out = tmp_path / "expanded.tsv"
    args = ["rewrite", "expand", "--topics", str(topics), "--output", str(out), "--mode", "query2doc",
            "--repeat", "3", "--base-url", server.url, "--model", "m"]
    assert main(args) == 0
    assert read_topics(out) == {
        "q1": "what is aspirin what is aspirin what is aspirin A passage about what is aspirin.",
        "q2": "define sri define sri define sri A passage about define sri.",
    }
    assert main(args) == 0 and server.count == 2  # second run from the default cache


def test_prompt_and_cleaning_helpers():
    assert clean_rewrite('\n  Rewritten query: "Aspirin dosage for adults"\nbecause ...') == "Aspirin dosage for adults"
    assert clean_rewrite("   \n") == ""
    # a chat model's preamble, or markdown around the prefix, is not the rewrite
    assert clean_rewrite("Here is the rewritten query:\n\nDoes vitamin D raise cancer risk?") == \
        "Does vitamin D raise cancer risk?"
    assert clean_rewrite("**Rewritten query:** aspirin dosage") == "aspirin dosage"
    assert clean_rewrite("Keywords:") == "Keywords:"  # nothing follows: the line is all there is
    # a "{query}" in the passage's own text is not filled in with the query
    assert car_prompt("q-TEXT", "Templates use {query} placeholders.", template="P: {passage} | Q: {query}") == \
        "P: Templates use {query} placeholders. | Q: q-TEXT"
    prompt = car_prompt("q?", "word " * 1000, max_passage_chars=50)
    assert "Query: q?" in prompt and len(field(prompt, "Passage")) <= 55
    assert expand_query("hyde", "q", "  a  hypothetical\npassage ") == "a hypothetical passage"
    assert expand_query("query2doc", "q", "") == "q"  # nothing generated: the query stays
    assert "Claim: x" in prompt_for("hyde", "x", task="scifact")
    with pytest.raises(PeftIRError, match="task"):
        prompt_for("hyde", "x", task="nope")


def test_cache_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "c.jsonl"
    k1, k2 = cache_key("m", "p1"), cache_key("m", "p2")
    path.write_text(json.dumps({"key": k1, "model": "m", "output": "one"}) + "\n" + '{"key": "ab')
    cache = RewriteCache(path)
    assert cache.get(k1) == "one" and len(cache) == 1
    cache.put(k2, "m", "two")
    cache.close()
    again = RewriteCache(path)
    assert again.get(k1) == "one" and again.get(k2) == "two"
    assert cache_key("m", "p1") != cache_key("m2", "p1")
    path.write_text('not json\n{"key": "a", "model": "m", "output": "x"}\n')
    with pytest.raises(PeftIRError, match="c.jsonl:1"):
        RewriteCache(path)


def test_an_empty_generation_is_asked_again_not_cached(tmp_path: Path) -> None:
    # a refusal or a reasoning model's null content cached as "" would keep the original query for good
    class Backend:
        model_id = "m"

        def __init__(self, answers: list[str]) -> None:
            self.answers, self.calls = answers, 0

        def generate(self, prompt: str) -> str:
            self.calls += 1
            return self.answers.pop(0)

    cache = RewriteCache(tmp_path / "c.jsonl")
    first = Backend(["", "a passage"])
    assert generate_all(first, ["p1", "p2"], cache, progress=False) == ["", "a passage"]
    second = Backend(["now an answer"])
    assert generate_all(second, ["p1", "p2"], cache, progress=False) == ["now an answer", "a passage"]
    assert second.calls == 1  # p2 from the cache, p1 asked again


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    """A 1-layer random GPT-2 (width 32) with MiniLM's WordPiece tokenizer, saved as a plain HF folder."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-lm")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = GPT2Config(vocab_size=tok.vocab_size, n_positions=512, n_embd=32, n_layer=1, n_head=2,
                     bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_local_transformers_backend_greedy_and_hyde_cli(tiny_lm, tmp_path, monkeypatch):
    import torch

    backend = TransformersBackend(tiny_lm, max_new_tokens=8)
    prompt = prompt_for("hyde", "what is aspirin", task="web")
    text = backend.generate(prompt)
    assert backend.generate(prompt) == text  # greedy: deterministic
    enc = backend.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        ref = backend.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                     max_new_tokens=8, do_sample=False, pad_token_id=backend.tokenizer.pad_token_id)
    assert text == backend.tokenizer.decode(ref[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # no key needed for a local model
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\twhat is aspirin\nq2\tdefine sri\n")
    out = tmp_path / "hyde.tsv"
    assert main(["rewrite", "expand", "--topics", str(topics), "--output", str(out), "--mode", "hyde",
                 "--local-model", str(tiny_lm), "--max-tokens", "8"]) == 0
    expect = {q: expand_query("hyde", t, backend.generate(prompt_for("hyde", t))) for q, t in
              {"q1": "what is aspirin", "q2": "define sri"}.items()}
    assert read_topics(out) == expect
    # the cache is keyed by the model and the prompt: the same run is served from it without the model
    calls: list[str] = []
    cache = RewriteCache(f"{out}.llm-cache.jsonl")
    monkeypatch.setattr(TransformersBackend, "generate", lambda self, p: calls.append(p) or "x")
    outputs = generate_all(TransformersBackend(tiny_lm, max_new_tokens=8),
                           [prompt_for("hyde", "what is aspirin")], cache, progress=False)
    assert calls == []
    assert " ".join(outputs[0].split()) == expect["q1"]
