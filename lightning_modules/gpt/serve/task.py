"""task=serve: serve a GPT checkpoint over HTTP (a chat page and an OpenAI-style API).

    python run.py experiment=gpt_sft task=serve ckpt_path=<run>/checkpoints/last.ckpt
    python run.py experiment=gpt_sft task=serve ckpt_path=... serve.host=0.0.0.0 serve.token=<secret>
"""

import functools
import logging
import os

from omegaconf import DictConfig

from hylab.errors import UserError
from hylab.settings import parse_settings
from hylab.tasks import TaskResult
from lightning_modules.gpt.serve.settings import LOOPBACK, ServeSettings

log = logging.getLogger("hylab")


def serve_settings(cfg: DictConfig) -> ServeSettings:
    node = cfg.get("serve")
    settings = parse_settings(ServeSettings, node, "serve") if node is not None else ServeSettings()
    settings.token = settings.token or os.environ.get("HYLAB_SERVE_TOKEN") or None
    if settings.host not in LOOPBACK and not settings.token:
        raise UserError(
            f"serve.host={settings.host} lets other machines in: give an access token with serve.token=<secret> "
            "(or the HYLAB_SERVE_TOKEN environment variable), or keep serve.host=127.0.0.1"
        )
    return settings


def build_server(net, tokenizer, name: str, settings: ServeSettings):
    """(app, worker) for a net and its tokenizer; the worker is started."""
    from lightning_modules.gpt.serve.app import ServedModel, create_app
    from lightning_modules.gpt.serve.worker import GenerationWorker
    from lightning_modules.gpt.tools import reply_pieces, run_in_sandbox

    tools = settings.tools and tokenizer.has_tools
    run_tool = functools.partial(run_in_sandbox, wall_s=settings.tool_wall_s, memory_mb=settings.tool_memory_mb) if tools else None
    make_stream = functools.partial(reply_pieces, net, tokenizer, run_tool=run_tool)
    model = ServedModel(name, net.num_parameters(), net.config.context_len, tokenizer, tools)
    worker = GenerationWorker(make_stream, settings.max_active, settings.max_queue).start()
    return create_app(model, worker, settings), worker


def serve(cfg: DictConfig) -> TaskResult:
    import uvicorn

    from lightning_modules.gpt.tasks import load_for_sampling

    settings = serve_settings(cfg)
    net, tokenizer = load_for_sampling(cfg)
    name = settings.model_name or os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(cfg.ckpt_path))))
    app, worker = build_server(net, tokenizer, name, settings)
    query = "/?token=<serve.token>" if settings.token else "/"
    log.info(f"serving {name} ({net.num_parameters() / 1e6:.1f}M parameters) on http://{settings.host}:{settings.port}{query}")
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    finally:
        worker.stop()
    return TaskResult(checkpoints={"evaluated": str(cfg.ckpt_path)})
