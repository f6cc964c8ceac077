"""Results of finished runs as tables: ``python -m lossy_memory.report <runs or multiruns ...>``.

``runs`` collects every training run under the folders (one way, from the ``results.json`` each run writes as it
ends), recognises its kind from the model it trained and pools seeds; one module per kind turns its runs into the
papers' table shape (Markdown, CSV, plot): ``compression`` (Tables 6-7), ``distillation`` (Tables 2, 3, 8),
``continual`` (Tables 4-5), ``condensation`` (Dataset Distillation, gradient matching).
"""
