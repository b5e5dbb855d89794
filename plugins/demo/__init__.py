"""Built-in plugin: the generated demo corpus and its knowledge sources (no download needed).

Registration only; the generator modules load when a component is built.
"""
from crs.hookspecs import hookimpl

_COMPONENTS = "crs.plugins.demo.components"


@hookimpl
def crs_register_datasets(register):
    register("demo", f"{_COMPONENTS}:DemoDataset")


@hookimpl
def crs_register_knowledge_sources(register):
    register("demo_kg", f"{_COMPONENTS}:DemoKnowledgeGraph")
    register("demo_concepts", f"{_COMPONENTS}:DemoConceptGraph")
    register("demo_reviews", f"{_COMPONENTS}:DemoReviews")
    register("demo_metadata", f"{_COMPONENTS}:DemoMetadata")
