"""Generator metadata: the parameters image generators write into the files they save.

Recognised (README "Generator metadata"; first match wins, in this order):

====================================  ============================================================
Generator                             Marker
====================================  ============================================================
ComfyUI                               ``prompt`` JSON graph (nodes with ``class_type``) and/or
                                      ``workflow`` JSON (``nodes[].type``); in WebP/JPEG EXIF as
                                      ``Prompt:{...}`` (Make) / ``Workflow:{...}`` (ImageDescription)
Fooocus                               ``fooocus_scheme`` text, or ``parameters`` JSON naming Fooocus
Stable Diffusion web UI (A1111/Forge) ``parameters`` text or EXIF UserComment with a
                                      ``Steps: .., Sampler: .., Model: ..`` line (Fooocus if its
                                      Version says so)
InvokeAI                              ``invokeai_metadata`` / ``invokeai_graph`` JSON, older
                                      ``sd-metadata`` JSON, oldest ``Dream`` text
NovelAI                               ``Software`` text (or EXIF Software) ``NovelAI``; ``Source``
                                      names the model, ``Comment`` JSON the settings
Midjourney                            ``Description`` text, XMP dc:description or EXIF
                                      ImageDescription with ``Job ID: <uuid>`` or ``--ar W:H`` /
                                      ``--v N`` / ``--niji`` flags
a name in :data:`KNOWN_GENERATORS`    EXIF Software, PNG ``Software`` text or XMP CreatorTool
====================================  ============================================================

Camera EXIF (Make, Model) is never a marker.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiscan.model.provenance.names import KNOWN_GENERATORS, known_generator
from aiscan.model.provenance.xmp import XmpFacts

__all__ = ["KNOWN_GENERATORS", "GeneratorFacts", "find_generator"]

PROMPT_CHARS = 200  # the prompt is evidence of a generator, not content to keep
MAX_NODES = 2000
_MODEL_SUFFIX = re.compile(r"\.(safetensors|ckpt|pt|pth|bin|gguf|sft)$", re.IGNORECASE)
# One setting of A1111's last line: "Key: value" or "Key: "quoted, with commas"".
_SETTING = re.compile(r'\s*([A-Za-z][\w ./()-]{0,40}):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_STEPS_LINE = re.compile(r"^Steps: \d+, .*Sampler: ", re.MULTILINE)
_JOB_ID = re.compile(r"Job ID:\s*([0-9a-fA-F-]{8,40})")
_MJ_FLAGS = re.compile(r"--(?:ar\s+\d+:\d+|v\s+\d[\d.]*|niji\b(?:\s+\d)?)")
# InvokeAI's oldest "Dream" text: a quoted prompt, then switches; -S is the seed.
_DREAM_SEED = re.compile(r"\s-S\s?\d+")


@dataclass(frozen=True)
class GeneratorFacts:
    """The generator an image's metadata names, and what showed it."""

    name: str  # the `generator` column
    evidence: dict[str, Any]


Finder = Callable[[dict[str, str], dict[str, str], XmpFacts | None], GeneratorFacts | None]


def find_generator(
    texts: dict[str, str], exif: dict[str, str], xmp: XmpFacts | None
) -> GeneratorFacts | None:
    """The generator that ``texts`` (PNG text chunks), ``exif`` and ``xmp`` name, or None."""
    finders: tuple[Finder, ...] = (_comfyui, _fooocus, _a1111, _invokeai, _novelai, _midjourney, _named)
    for finder in finders:
        facts = finder(texts, exif, xmp)
        if facts is not None:
            return facts
    return None


def model_stem(path: str) -> str:
    """A checkpoint's name without folders and file extension."""
    base = re.split(r"[\\/]", path.strip())[-1]
    return _MODEL_SUFFIX.sub("", base)


def _named_with(generator: str, model: str | None) -> str:
    return f"{generator} ({model})" if model else generator


def _json(text: str | None, notes: list[str], where: str) -> Any:
    """``text`` parsed as JSON (already size-capped), or None with a note when it is not readable."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except RecursionError:
        notes.append(f"{where}: JSON nested too deeply, not read")
    except ValueError as exc:
        notes.append(f"{where}: not JSON ({str(exc)[:80]})")
    return None


def _scalar(value: Any) -> Any:
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def _settings(source: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The plain (text or number) values of ``keys`` in a generator's settings."""
    return {key: source[key] for key in keys if _scalar(source.get(key)) is not None}


def _prompt(text: Any) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip()
    return text if len(text) <= PROMPT_CHARS else text[: PROMPT_CHARS - 1] + "…"


def _facts(generator: str, model: str | None, evidence: dict[str, Any], notes: list[str]) -> GeneratorFacts:
    if model:
        evidence["model"] = model
    if notes:
        evidence["notes"] = notes
    return GeneratorFacts(_named_with(generator, model_stem(model) if model else None), evidence)


# --- ComfyUI ---------------------------------------------------------------------------------------


def _comfy_sources(texts: dict[str, str], exif: dict[str, str]) -> dict[str, tuple[str, str]]:
    """``prompt`` and ``workflow`` JSON texts with where each was found."""
    found: dict[str, tuple[str, str]] = {
        key: (texts[key], f"text {key}") for key in ("prompt", "workflow") if key in texts
    }
    for tag in ("Make", "ImageDescription", "Model"):
        value = exif.get(tag, "")
        key, _, rest = value.partition(":")
        if key.lower() in ("prompt", "workflow") and rest.lstrip().startswith("{"):
            found.setdefault(key.lower(), (rest, f"exif {tag}"))
    return found


def _comfyui(texts: dict[str, str], exif: dict[str, str], xmp: XmpFacts | None) -> GeneratorFacts | None:
    sources = _comfy_sources(texts, exif)
    if not sources:
        return None
    notes: list[str] = []
    evidence: dict[str, Any] = {"format": "comfyui", "markers": []}
    models: list[str] = []
    if "prompt" in sources:
        text, where = sources["prompt"]
        graph = _json(text, notes, where)
        if isinstance(graph, dict) and _comfy_graph(graph, models, evidence):
            evidence["markers"].append(f"{where}: node graph")
    if "workflow" in sources:
        text, where = sources["workflow"]
        workflow = _json(text, notes, where)
        if isinstance(workflow, dict) and _comfy_workflow(workflow, models, evidence):
            evidence["markers"].append(f"{where}: workflow nodes")
    if not evidence["markers"]:
        return None
    return _facts("ComfyUI", models[0] if models else None, evidence, notes)


def _comfy_graph(graph: dict[str, Any], models: list[str], evidence: dict[str, Any]) -> bool:
    """An API prompt graph's checkpoint, sampler settings and prompt; False when it is no graph."""
    nodes = [
        node
        for node in itertools.islice(graph.values(), MAX_NODES)
        if isinstance(node, dict) and isinstance(node.get("class_type"), str)
    ]
    if not nodes:
        return False
    evidence["nodes"] = len(nodes)
    for node in nodes:
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            continue
        kind = node["class_type"]
        for key in ("ckpt_name", "unet_name"):
            if isinstance(inputs.get(key), str):
                models.append(inputs[key])
                evidence.setdefault("loader", kind)
        if "Sampler" in kind and "sampler" not in evidence:
            settings = {
                key: _scalar(inputs.get(key))
                for key in ("seed", "noise_seed", "steps", "cfg", "sampler_name", "scheduler")
            }
            evidence["sampler"] = {key: value for key, value in settings.items() if value is not None}
        if kind == "CLIPTextEncode" and "prompt" not in evidence:
            prompt = _prompt(inputs.get("text"))
            if prompt:
                evidence["prompt"] = prompt
    return True


def _comfy_workflow(workflow: dict[str, Any], models: list[str], evidence: dict[str, Any]) -> bool:
    """A UI workflow's loader widgets; False when it holds no typed nodes."""
    nodes = workflow.get("nodes")
    if not isinstance(nodes, list):
        return False
    typed = [n for n in nodes[:MAX_NODES] if isinstance(n, dict) and isinstance(n.get("type"), str)]
    for node in typed:
        kind = node["type"]
        widgets = node.get("widgets_values")
        if ("CheckpointLoader" in kind or "UNETLoader" in kind or "UnetLoader" in kind) and isinstance(
            widgets, list
        ):
            name = next((w for w in widgets if isinstance(w, str)), None)
            if name:
                models.append(name)
                evidence.setdefault("loader", kind)
    evidence.setdefault("nodes", len(typed))
    return bool(typed)


# --- Stable Diffusion web UI and Fooocus -----------------------------------------------------------


def _fooocus(texts: dict[str, str], exif: dict[str, str], xmp: XmpFacts | None) -> GeneratorFacts | None:
    scheme = texts.get("fooocus_scheme")
    text = texts.get("parameters")
    if text is None or not text.lstrip().startswith("{"):
        return None
    notes: list[str] = []
    params = _json(text, notes, "text parameters")
    if not isinstance(params, dict):
        return _facts("Fooocus", None, {"format": "fooocus", "scheme": scheme}, notes) if scheme else None
    lowered = {
        str(key).lower().replace(" ", "_"): value for key, value in itertools.islice(params.items(), 200)
    }
    version = _scalar(lowered.get("version"))
    if scheme is None and not (isinstance(version, str) and "fooocus" in version.lower()):
        return None
    evidence: dict[str, Any] = {"format": "fooocus", "markers": ["text parameters: JSON"]}
    if scheme:
        evidence["scheme"] = scheme
    if version:
        evidence["version"] = version
    evidence.update(_settings(lowered, ("steps", "seed", "sampler", "scheduler", "performance")))
    prompt = _prompt(lowered.get("prompt"))
    if prompt:
        evidence["prompt"] = prompt
    model = _scalar(lowered.get("base_model"))
    return _facts("Fooocus", model if isinstance(model, str) else None, evidence, notes)


def _a1111(texts: dict[str, str], exif: dict[str, str], xmp: XmpFacts | None) -> GeneratorFacts | None:
    sources = (("text parameters", texts.get("parameters")), ("exif UserComment", exif.get("UserComment")))
    where, text, line = next(
        ((where, text, line) for where, text in sources if text and (line := _STEPS_LINE.search(text))),
        ("", "", None),
    )
    if line is None:
        return None
    settings_line = text[line.start() :].split("\n", 1)[0]
    settings = {key.strip(): value.strip().strip('"') for key, value in _SETTING.findall(settings_line)}
    evidence: dict[str, Any] = {"format": "a1111", "markers": [f"{where}: Steps/Sampler line"]}
    for key in ("Steps", "Sampler", "Seed", "CFG scale", "Size", "Model hash", "Version"):
        if settings.get(key):
            evidence[key.lower().replace(" ", "_")] = settings[key]
    prompt = _prompt(text[: line.start()].split("\nNegative prompt:", 1)[0])
    if prompt:
        evidence["prompt"] = prompt
    generator = "Stable Diffusion web UI"
    if "fooocus" in settings.get("Version", "").lower() or "fooocus_scheme" in texts:
        generator = "Fooocus"
    return _facts(generator, settings.get("Model") or None, evidence, [])


# --- InvokeAI --------------------------------------------------------------------------------------


def _invokeai(texts: dict[str, str], exif: dict[str, str], xmp: XmpFacts | None) -> GeneratorFacts | None:
    notes: list[str] = []
    evidence: dict[str, Any] = {"format": "invokeai"}
    model: str | None = None
    if "invokeai_metadata" in texts or "invokeai_graph" in texts:
        evidence["markers"] = [
            f"text {key}" for key in ("invokeai_metadata", "invokeai_graph") if key in texts
        ]
        meta = _json(texts.get("invokeai_metadata"), notes, "text invokeai_metadata")
        if isinstance(meta, dict):
            found = meta.get("model")
            if isinstance(found, dict):
                found = found.get("name") or found.get("model_name")
            model = found if isinstance(found, str) else None
            evidence.update(
                _settings(meta, ("seed", "steps", "scheduler", "cfg_scale", "app_version", "generation_mode"))
            )
            prompt = _prompt(meta.get("positive_prompt"))
            if prompt:
                evidence["prompt"] = prompt
    elif "sd-metadata" in texts:
        evidence["markers"] = ["text sd-metadata"]
        meta = _json(texts["sd-metadata"], notes, "text sd-metadata")
        if isinstance(meta, dict):
            found = meta.get("model_weights")
            model = found if isinstance(found, str) else None
            image = meta.get("image")
            if isinstance(image, dict):
                evidence.update(_settings(image, ("seed", "steps", "sampler", "cfg_scale")))
    elif _is_dream(texts.get("Dream", "")):
        evidence["markers"] = ["text Dream"]
        evidence["prompt"] = _prompt(texts["Dream"])
    else:
        return None
    return _facts("InvokeAI", model, evidence, notes)


def _is_dream(text: str) -> bool:
    """A quoted prompt before a seed switch; found without a backtracking pattern (the text is hostile)."""
    seed = _DREAM_SEED.search(text)
    return text.startswith('"') and seed is not None and text.rfind('"', 1, seed.start()) > 0


# --- NovelAI and Midjourney ------------------------------------------------------------------------


def _novelai(texts: dict[str, str], exif: dict[str, str], xmp: XmpFacts | None) -> GeneratorFacts | None:
    software = texts.get("Software") or exif.get("Software") or ""
    if software.strip() != "NovelAI":
        return None
    notes: list[str] = []
    where = "text Software" if texts.get("Software") else "exif Software"
    evidence: dict[str, Any] = {"format": "novelai", "markers": [f"{where}: NovelAI"]}
    comment = _json(texts.get("Comment"), notes, "text Comment")
    if isinstance(comment, dict):
        evidence.update(_settings(comment, ("steps", "sampler", "seed", "scale", "noise_schedule")))
    prompt = _prompt(texts.get("Description"))
    if prompt:
        evidence["prompt"] = prompt
    source = texts.get("Source", "").strip()[:120] or None
    # NovelAI names its model in Source, e.g. "NovelAI Diffusion V3 4BA8C6A6": no file stem to cut.
    return GeneratorFacts(_named_with("NovelAI", source), {**evidence, **({"notes": notes} if notes else {})})


def _midjourney(texts: dict[str, str], exif: dict[str, str], xmp: XmpFacts | None) -> GeneratorFacts | None:
    candidates = (
        ("text Description", texts.get("Description")),
        ("xmp dc:description", xmp.description if xmp is not None else None),
        ("exif ImageDescription", exif.get("ImageDescription")),
    )
    for where, text in candidates:
        if not text:
            continue
        job = _JOB_ID.search(text)
        flags = _MJ_FLAGS.findall(text)
        if job or flags:
            evidence: dict[str, Any] = {"format": "midjourney", "markers": [where]}
            if job:
                evidence["job_id"] = job.group(1)
            if flags:
                evidence["flags"] = flags[:8]
            author = texts.get("Author")
            if author:
                evidence["author"] = author[:100]
            prompt = _prompt(text.split(" --", 1)[0].split("Job ID:", 1)[0])
            if prompt:
                evidence["prompt"] = prompt
            return GeneratorFacts("Midjourney", evidence)
    return None


def _named(texts: dict[str, str], exif: dict[str, str], xmp: XmpFacts | None) -> GeneratorFacts | None:
    candidates = (
        ("exif Software", exif.get("Software")),
        ("text Software", texts.get("Software")),
        ("xmp CreatorTool", xmp.creator_tool if xmp is not None else None),
    )
    for where, text in candidates:
        name = known_generator(text)
        if name is not None and text is not None:
            return GeneratorFacts(name, {"format": "name", "markers": [f"{where}: {text[:100]}"]})
    return None
