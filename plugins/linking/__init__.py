"""Built-in plugin: entity linkers.  Registration only; the linker module loads when built."""
from crs.hookspecs import hookimpl


@hookimpl
def crs_register_entity_linkers(register):
    register("phrase_matcher", "crs.plugins.linking.phrase_matcher:PhraseMatcher")
