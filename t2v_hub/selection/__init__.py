"""Everything that ranks experts for a task.

- :mod:`.distances`: the one reference definition of d_sym / d_asym (every fast
  kernel in :mod:`.kernels` is tested against it);
- :mod:`.recommend`: the one ``recommend()`` flow (list experts -> choose the probe
  -> embed -> rank) used by the CLI, :func:`t2v_hub.rank_backbones` and the index;
- :mod:`.index`: the memory-mapped expert index;
- :mod:`.model2vec`: MODEL2VEC selectors (the artifact; training in :mod:`.training`, the
  per-layer metric of the default ``bias="layer"`` in :mod:`.layer_weights`);
- :mod:`.error_matrix` / :mod:`.eval_results`: the tasks x experts errors that train
  and evaluate selectors, from files or from the experts' Hub evaluation results;
- :mod:`.metrics`: selection quality (relative error increase, top-1, tau).

May import the lower floors (``data``, ``probes``, ``fisher``, ``hub``), the
embedding format and the pipeline (:mod:`t2v_hub.task2vec`); nothing below imports it.
"""
