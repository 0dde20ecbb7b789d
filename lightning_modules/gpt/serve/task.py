"""task=serve: serve a GPT checkpoint over HTTP (a chat page and OpenAI's chat completions).

    python run.py experiment=gpt_sft task=serve ckpt_path=<run>/checkpoints/last.ckpt
    HYLAB_SERVE_TOKEN=<secret> python run.py experiment=gpt_sft task=serve ckpt_path=... serve.host=0.0.0.0
"""

import functools
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from omegaconf import DictConfig

from hylab.errors import UserError
from hylab.tasks import TaskResult
from lightning_modules.gpt.serve.settings import LOOPBACK, TOKEN_ENV, ServeSettings, read_serve_settings

log = logging.getLogger("hylab")


def serve_settings(cfg: DictConfig) -> ServeSettings:
    return read_serve_settings(cfg.get("serve"))


def access_token(settings: ServeSettings) -> str | None:
    """The token from $HYLAB_SERVE_TOKEN or serve.token_file; required beyond loopback."""
    token = os.environ.get(TOKEN_ENV) or None
    if settings.token_file:
        path = Path(settings.token_file).expanduser()
        if not path.is_file():
            raise UserError(f"serve.token_file={settings.token_file}: no such file; write the token into it (one line)")
        token = path.read_text().strip() or None
        if token is None:
            raise UserError(f"serve.token_file={settings.token_file} is empty; write the token into it (one line)")
    if settings.host not in LOOPBACK and not token:
        raise UserError(
            f"serve.host={settings.host} lets other machines in: give an access token in the {TOKEN_ENV} environment "
            "variable or a file named by serve.token_file, or keep serve.host=127.0.0.1"
        )
    return token


def model_identity(ckpt_path: str, experiment: str | None) -> tuple[str, int]:
    """("<experiment>-<short hash>", created): the experiment and training hash from the run's
    metrics.json beside the checkpoint, else this run's experiment and the checkpoint file's hash."""
    path = Path(ckpt_path).resolve()
    record_file = path.parent.parent / "metrics.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    short = (record.get("config_hash") or "")[:8]
    if not short:
        with open(path, "rb") as handle:
            short = hashlib.file_digest(handle, "sha256").hexdigest()[:8]
    return f"{record.get('experiment') or experiment or 'gpt'}-{short}", int(path.stat().st_mtime)


TOOL_NICENESS = 10  # tool processes yield the CPU to token streaming


def lower_priority() -> None:
    """Run in each tool thread: on Linux a thread has its own nice value and the processes it
    starts inherit it, so a tool call's computation does not take cores from the decoding thread."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + TOOL_NICENESS))
    except (AttributeError, OSError):  # not Linux: the pool runs at the server's priority
        pass


def build_server(net, tokenizer, name: str, settings: ServeSettings, token: str | None = None, created: int = 0):
    """(app, worker) for a net and its tokenizer; the worker is started. Tool calls run in a pool
    of threads at a lower priority (each waits for its sandbox process), not in the thread that
    decodes."""
    from concurrent.futures import ThreadPoolExecutor

    from lightning_modules.gpt.serve.app import ServedModel, create_app
    from lightning_modules.gpt.serve.worker import GenerationWorker
    from lightning_modules.gpt.tools import reply_pieces, run_in_sandbox

    tools = settings.tools and tokenizer.has_tools
    run_tool = None
    if tools:
        workers = settings.tool_workers or max(1, (os.cpu_count() or 2) // 2)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpt-tool", initializer=lower_priority)
        sandboxed = functools.partial(run_in_sandbox, wall_s=settings.tool_wall_s, memory_mb=settings.tool_memory_mb)
        run_tool = functools.partial(pool.submit, sandboxed)
    make_stream = functools.partial(reply_pieces, net, tokenizer, run_tool=run_tool)
    model = ServedModel(name, net.num_parameters(), net.config.context_len, tokenizer, tools, created)
    worker = GenerationWorker(make_stream, settings.max_active, settings.max_queue).start()
    return create_app(model, worker, settings, token), worker


def serve(cfg: DictConfig) -> TaskResult:
    import uvicorn
    from hydra.core.hydra_config import HydraConfig

    from lightning_modules.gpt.tasks import load_for_sampling

    settings = serve_settings(cfg)
    token = access_token(settings)
    net, tokenizer = load_for_sampling(cfg)
    experiment = HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None
    name, created = model_identity(cfg.ckpt_path, experiment)
    name = settings.model_name or name
    app, worker = build_server(net, tokenizer, name, settings, token, created)
    query = "/?token=<your token>" if token else "/"
    log.info(f"serving {name} ({net.num_parameters() / 1e6:.1f}M parameters) on http://{settings.host}:{settings.port}{query}")
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        worker.stop()
    return TaskResult(checkpoints={"evaluated": str(cfg.ckpt_path)})
