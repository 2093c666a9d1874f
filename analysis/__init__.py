"""Read-only answers to the seed's questions: one module per question, each a named SQL query.

`analysis.registry.MODULES` lists them (name -> AnalysisModule: question, params model,
answer function); every read goes through `schema.read.query`.
"""
