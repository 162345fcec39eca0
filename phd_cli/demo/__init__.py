"""``phd demo``: the whole pipeline on one machine (see :mod:`phd_cli.demo.run`).

Modules: ``procs`` (child processes, ports, stopping), ``ready`` (readiness waits), ``setup``
(PKI, broker config, server state), ``fleet`` (virtual PHDs, enrollment, the agent),
``stats`` (counts and the exactly-once verdict), ``view`` (live table and summaries), ``run``
(the order of things). Nothing heavy is imported here.
"""
