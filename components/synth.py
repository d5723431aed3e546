"""Component: generate the synthetic multi-hospital cohort (the demo's data when no input is given)."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def synth_cohort(settings_json: str, cohort: Output[Dataset], preview: Output[HTML]) -> int:
    """Write the cohort described by the ``synth`` section of the settings; returns the image count."""
    import tempfile
    from pathlib import Path

    from isnetflow.config import Settings
    from isnetflow.stages import synth
    from isnetflow.viz import images_html

    settings = Settings.model_validate_json(settings_json)
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "cohort-preview.png"
        summary = synth.run(settings.synth, cohort.path, preview=png, progress=False)
        Path(preview.path).write_text(images_html("Synthetic cohort", [("examples per site and class", png)]))
    cohort.metadata.update({"images": summary["n"], "sites": len(summary["sites"])})
    return int(summary["n"])
