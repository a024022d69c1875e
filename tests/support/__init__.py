"""What the tests share, imported as `tests.support.X` (pytest puts the repository root on sys.path).

    ports.py            free_port, free_ports, free_port_range (127.0.0.1)
    fakes.py            FakeNvml: pynvml as NvmlSampler calls it, failures switchable
    miner_log.py        miner_log_line, stamp_now: the miner's loguru log lines, for the log tests
    model_dirs.py       diffusers_folder: a complete-looking weights folder (no weights), for lookups;
                        transformers_text_encoder: a text_encoder/ folder written by transformers
    fake_pynvml.py      FakeNvml as a module, for `gen404 serve` subprocesses (GEN404_NVML_MODULE)
    server.py           running_server / ServerProcess: a real `gen404 serve` or validator subprocess,
                        with health/stats reads and waits
                        (on 127.0.0.1, or another loopback address standing for a second box)
    console_app.py      quiet_config, offline_console: an isolated console for Pilot tests
    console_testkit.py  the fake endpoint's command line, process reaping, Pilot waits, screen text
    fake_endpoint.py    a stdlib HTTP stand-in for `gen404 serve` (run as a script)
    reliability_kit.py  the reliability suite's supervisor thread, figures, presets

The one test clock is console.mining.clock.ManualClock (pass `clock.now` where a callable is wanted).
"""
