"""LLM back-ends behind one interface: `backend.model_id` (what the cache is keyed by) and
`backend.generate(prompt) -> str`.

- `OpenAIChatBackend`: any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, Ollama, ...),
  over the standard library's HTTP client. The API key is read from an environment variable only (default
  OPENAI_API_KEY); it goes into the Authorization header and nowhere else: not into logs, error messages,
  the cache or any output file. Timeouts, and retries with exponential backoff on connection errors, timeouts,
  429 and 5xx answers.
- `TransformersBackend`: a local causal LM (AutoModelForCausalLM + generate), greedy by default.

`generate_all` runs prompts through a back-end with the JSONL cache (`peft_ir.rewrite.cache`) in front of it:
cached prompts never reach the back-end, new generations are appended to the cache one by one.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from peft_ir.errors import PeftIRError
from peft_ir.rewrite.cache import RewriteCache, cache_key

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMBackend(Protocol):
    model_id: str

    def generate(self, prompt: str) -> str: ...


def _settings_id(kind: str, model: str, **settings: Any) -> str:
    return json.dumps({"backend": kind, "model": model, **settings}, sort_keys=True, separators=(",", ":"))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would re-send the Authorization header to wherever it points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _opener(url: str) -> urllib.request.OpenerDirector:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    # a local server is reached directly, whatever proxy the environment names; others honour *_proxy
    proxies = urllib.request.ProxyHandler({}) if loopback else urllib.request.ProxyHandler()
    return urllib.request.build_opener(proxies, _NoRedirect)


class OpenAIChatBackend:
    """POST {base_url}/chat/completions with one user message (and an optional system message)."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 max_retries: int = 4, backoff: float = 1.0, temperature: float = 0.0, max_tokens: int = 256,
                 system: str | None = None, sleep: Callable[[float], None] = time.sleep):
        if not base_url.startswith(("http://", "https://")):
            raise PeftIRError(f"--base-url must start with http:// or https://, got {base_url!r}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env or ""):
            # not echoed: a key pasted here by mistake must not end up in a message
            raise PeftIRError("--api-key-env must be the *name* of an environment variable (letters, digits, _)")
        key = os.environ.get(api_key_env, "")
        if not key:
            raise PeftIRError(f"no API key: set the environment variable {api_key_env} (any non-empty value for a "
                              f"local server that does not check keys), or name another with --api-key-env")
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.timeout, self.max_retries, self.backoff = float(timeout), int(max_retries), float(backoff)
        self.temperature, self.max_tokens, self.system = float(temperature), int(max_tokens), system
        self._sleep = sleep
        self._open = _opener(self.url).open
        self.requests_made = 0
        self.model_id = _settings_id("openai-chat", model, temperature=self.temperature, max_tokens=self.max_tokens,
                                     system=system)

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIChatBackend(url={self.url!r}, model={self.model!r})"

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def generate(self, prompt: str) -> str:
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
                   [{"role": "user", "content": prompt}]
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode("utf-8")
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                log.info("retrying %s in %.1f s (attempt %d of %d): %s", self.url, delay, attempt + 1,
                         self.max_retries + 1, last)
                self._sleep(delay)
            request = urllib.request.Request(self.url, data=body, method="POST", headers={
                "Content-Type": "application/json", "Accept": "application/json",
                "Authorization": f"Bearer {self._key}"})
            self.requests_made += 1
            try:
                with self._open(request, timeout=self.timeout) as resp:
                    payload = resp.read()
            except urllib.error.HTTPError as exc:
                detail = self._redact(exc.read()[:300].decode("utf-8", "replace"))
                last = f"HTTP {exc.code} {exc.reason}: {detail}".strip()
                if exc.code in RETRY_STATUS:
                    continue
                raise PeftIRError(f"LLM endpoint {self.url} refused the request: {last}") from None
            except (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                last = self._redact(f"{type(reason).__name__}: {reason}")
                continue
            return self._parse(payload)
        raise PeftIRError(f"LLM endpoint {self.url} unreachable or failing after {self.max_retries + 1} "
                          f"attempt(s): {last}")

    def _parse(self, payload: bytes) -> str:
        try:
            obj = json.loads(payload)
            content = obj["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            snippet = self._redact(payload[:200].decode("utf-8", "replace"))
            raise PeftIRError(f"LLM endpoint {self.url} gave an answer that is not a chat completion: {snippet!r}") from None
        if content is None:
            return ""
        if not isinstance(content, str):
            raise PeftIRError(f"LLM endpoint {self.url}: message content is not a string")
        return content


class TransformersBackend:
    """A local causal LM: chat template when the tokenizer has one, greedy decoding unless `do_sample`."""

    def __init__(self, model_path: str | Path, *, max_new_tokens: int = 128, do_sample: bool = False,
                 temperature: float = 1.0, seed: int = 0, device: str = "cpu", system: str | None = None):
        import torch  # noqa: PLC0415
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        self.path = str(model_path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModelForCausalLM.from_pretrained(self.path)
        except (OSError, ValueError) as exc:
            raise PeftIRError(f"cannot load a causal LM from {self.path}: {exc}") from None
        self.model.to(device).eval()
        self.device, self.system = device, system
        self.max_new_tokens, self.do_sample, self.temperature, self.seed = max_new_tokens, do_sample, temperature, seed
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self._torch = torch
        name = getattr(self.model.config, "_name_or_path", "") or self.path
        settings: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "system": system}
        if do_sample:
            settings.update(temperature=temperature, seed=seed)
        self.model_id = _settings_id("transformers", str(Path(name).resolve()) if Path(name).exists() else name,
                                     **settings)

    def _inputs(self, prompt: str) -> Any:
        if getattr(self.tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
                       [{"role": "user", "content": prompt}]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        return self.tokenizer(prompt, return_tensors="pt")

    def generate(self, prompt: str) -> str:
        enc = self._inputs(prompt)
        inputs = {"input_ids": enc["input_ids"].to(self.device),
                  "attention_mask": enc["attention_mask"].to(self.device)}
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                                  "pad_token_id": self.tokenizer.pad_token_id}
        if self.do_sample:
            kwargs["temperature"] = self.temperature
            self._torch.manual_seed(self.seed)
        else:  # plain greedy decoding, whatever the model's generation_config says
            kwargs.update(num_beams=1, temperature=None, top_p=None, top_k=None)
        with self._torch.no_grad():
            out = self.model.generate(**inputs, **kwargs)
        new = out[0, inputs["input_ids"].shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True)


def generate_all(backend: LLMBackend, prompts: Sequence[str], cache: RewriteCache, workers: int = 1,
                 progress: bool = True) -> list[str]:
    """Outputs for all prompts (same order), served from the cache where possible (see `generate_missing`)."""
    keys = [cache_key(backend.model_id, p) for p in prompts]
    generate_missing(backend, dict(zip(keys, prompts)), cache, workers=workers, progress=progress)
    return [cache.get(k) or "" for k in keys]


def generate_missing(backend: LLMBackend, prompts: Mapping[str, str], cache: RewriteCache, workers: int = 1,
                     progress: bool = True) -> int:
    """Generate every {cache key: prompt} not yet in the cache; returns how many were generated.

    Each new generation is appended to the cache as soon as it arrives; the first failure is raised after the
    other running requests finish, so a re-run resumes where this one stopped. An empty generation (a refusal, a
    reasoning model's `content: null`) is not cached: its prompt is asked again on a re-run, not served "" for good.
    """
    from tqdm.auto import tqdm  # noqa: PLC0415

    todo = {k: p for k, p in prompts.items() if k not in cache}
    log.info("%d distinct prompt(s): %d cached, %d to generate with %s", len(prompts), len(prompts) - len(todo),
             len(todo), backend)

    empty: list[str] = []

    def one(key: str) -> None:
        output = backend.generate(todo[key])
        if output.strip():
            cache.put(key, backend.model_id, output)
        else:
            empty.append(key)

    with tqdm(total=len(todo), desc="generate", unit="prompt", disable=not progress or not todo) as bar:
        if workers <= 1:
            for key in todo:
                one(key)
                bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(one, key) for key in todo]
                error: BaseException | None = None
                for fut in futures:
                    try:
                        fut.result()
                    except BaseException as exc:  # noqa: BLE001
                        if error is None:
                            error = exc
                            for other in futures:
                                other.cancel()
                    bar.update(1)
                if error is not None:
                    raise error
    if empty:
        log.warning("%d of %d generation(s) came back empty: not cached, asked again on a re-run (their topics keep "
                    "the original query meanwhile)", len(empty), len(todo))
    return len(todo)


def make_backend(*, base_url: str | None = None, model: str | None = None, local_model: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0, max_retries: int = 4,
                 backoff: float = 1.0, temperature: float = 0.0, max_tokens: int = 256, system: str | None = None,
                 device: str = "cpu") -> LLMBackend:
    """An HTTP back-end (base_url + model) or a local one (local_model); exactly one must be named."""
    if local_model and base_url:
        raise PeftIRError("name either --base-url/--model (HTTP endpoint) or --local-model (transformers), not both")
    if local_model:
        return TransformersBackend(local_model, max_new_tokens=max_tokens, device=device, system=system)
    if not base_url or not model:
        raise PeftIRError("an LLM is needed: give --base-url and --model (OpenAI-compatible endpoint) "
                          "or --local-model PATH (transformers causal LM)")
    return OpenAIChatBackend(base_url, model, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries,
                             backoff=backoff, temperature=temperature, max_tokens=max_tokens, system=system)
