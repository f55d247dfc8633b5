"""The page's "Advanced" section: the inversion's method, options, steps and guidance (and an Invert
button for inverting alone), the edit's control, mask, prompt-to-prompt knobs, start step, guidance
and the ladder's recipe, and every other on-page `EditSpec` setting as a generated control.

The simple page (`unsample.ui.app`) needs none of these: its one Edit button uses their values,
which start at `EditSpec`'s defaults. Each control here shows its setting's default, its help line
(`setting_info(name)`) and, for the sliders, its declared range. The functions take the gradio
module as an argument (`unsample.ui.app` imports it when a page is built), so importing this
module loads no gradio.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from unsample.editing.ladder import rung_names
from unsample.editing.spec import SettingInfo, setting_info, settings
from unsample.images import FITS
from unsample.ui import callbacks as cb
from unsample.ui.controls import OptionControl, method_controls

LAID_OUT = frozenset({"target_prompt", "source_prompt", "control", "mask", "start_step", "guidance", "reweight",
                      "blend_words", "cross_steps", "self_steps"})
"""The edit settings the page lays out by hand; every other setting the spec marks ``on_page`` gets a
generated control (`setting_control`), so a new setting appears on the page from its declaration."""
INVERSION_SETTINGS = frozenset({"fit"})
"""Generated settings that decide the inversion (the working image's size): they sit with the
inversion's controls, and changing one inverts again (`unsample.ui.session.InversionKey`)."""
OFFERED_CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType({"fit": FITS})
"""Choices a generated dropdown offers when the setting accepts more (fit's earlier names "model"
and "multiple" stay accepted by the API but are not offered twice)."""
LADDER_CHOICE = "the ladder (escalate until the check says the edit took)"
"""The recipe dropdown's first choice: no pinned recipe (`EditSpec.recipe` None)."""


def generated_settings() -> list[SettingInfo]:
    """The on-page edit settings without a hand-laid control, in the spec's order."""
    return [info for info in settings() if info.setting.on_page and info.name not in LAID_OUT]


def recipe_value(choice: str | None) -> str | None:
    """The recipe dropdown's value -> `EditSpec.recipe` (None: the ladder)."""
    return None if not choice or choice == LADDER_CHOICE else choice


def setting_control(gr: Any, info: SettingInfo) -> Any:
    """A control for one edit setting, from its type, default, choices and help."""
    common = {"label": info.name.replace("_", " ").capitalize(), "info": info.setting.help,
              "elem_id": "setting-" + info.name.replace("_", "-")}
    if info.choices:
        return gr.Dropdown(list(OFFERED_CHOICES.get(info.name, info.choices)), value=info.default, **common)
    if isinstance(info.default, bool):
        return gr.Checkbox(value=info.default, **common)
    if isinstance(info.default, (int, float)):
        return gr.Number(value=info.default, precision=0 if isinstance(info.default, int) else None, **common)
    return gr.Textbox(value="" if info.default is None else str(info.default), **common)


def option_component(gr: Any, control: OptionControl) -> Any:
    """The gradio control for one method option (`unsample.ui.controls.OptionControl`)."""
    label, common = control.name, {"info": control.info, "elem_id": control.elem_id}
    if control.widget == "dropdown":
        return gr.Dropdown(list(control.choices), value=control.default, label=label, **common)
    if control.widget == "checkbox":
        return gr.Checkbox(value=bool(control.default), label=label, **common)
    if control.widget == "integer":
        return gr.Number(value=control.default, precision=0, label=label, **common)
    if control.widget == "number":
        return gr.Number(value=control.default, label=label, **common)
    return gr.Textbox(value="" if control.default is None else str(control.default), label=label, **common)


def from_spec(name: str) -> dict[str, Any]:
    """A control's value and help line: the edit setting ``name``'s default and help (`setting_info`)."""
    info = setting_info(name)
    return {"value": info.default, "info": info.setting.help}


def slider_range(name: str) -> tuple[float, float]:
    """A slider's ends: the edit setting ``name``'s declared bounds."""
    bounds = setting_info(name).bounds
    assert bounds is not None and bounds.low is not None and bounds.high is not None, name
    return bounds.low, bounds.high


@dataclass
class AdvancedControls:
    """The Advanced section's components, for the page's events."""

    method: Any
    groups: list[Any]
    """One group of option controls per method; the chosen method's is visible."""
    option_inputs: list[Any]
    option_names: list[tuple[str, str]]
    """(method, option) of each of ``option_inputs``."""
    steps: Any
    guidance: Any
    invert_button: Any
    reconstruction: Any
    invert_cost: Any
    inversion_file: Any
    control: Any
    mask: Any
    drawing: Any
    mask_file: Any
    reweight: Any
    blend_words: Any
    cross_steps: Any
    self_steps: Any
    start_step: Any
    edit_guidance: Any
    recipe: Any
    generated: dict[str, Any]
    """The generated controls by setting name (`generated_settings`), inversion settings included."""
    mask_view: Any


def advanced_section(gr: Any, methods: list[str], default_method: str, masks: list[str],
                     controls: list[tuple[str, str]]) -> AdvancedControls:
    """Lay out the Advanced section (inside the caller's ``gr.Accordion``): the inversion on the
    left with its own Invert button and results, the edit's settings on the right."""
    generated = {info.name: info for info in generated_settings()}
    made: dict[str, Any] = {}
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Inversion.** Edit inverts the photo with these settings the first time, and again "
                        "only when the photo, the source prompt or one of these changes.")
            method = gr.Dropdown(methods, value=default_method, label="Inversion method", elem_id="method")
            groups, option_inputs, option_names = [], [], []
            for name in methods:
                with gr.Group(visible=name == default_method) as group:
                    for control in method_controls(name):
                        option_inputs.append(option_component(gr, control))
                        option_names.append((name, control.name))
                groups.append(group)
            with gr.Row():
                steps = gr.Number(value=setting_info("steps").default, precision=0, label="Steps", elem_id="steps")
                guidance = gr.Number(value=setting_info("inversion_guidance").default, label="Inversion guidance",
                                     info="1 = no classifier-free guidance", elem_id="inversion-guidance")
            for name in sorted(INVERSION_SETTINGS & set(generated)):
                made[name] = setting_control(gr, generated[name])
            invert_button = gr.Button("Invert only (check the reconstruction)", elem_id="invert")
            reconstruction = gr.Image(label="Reconstruction", type="pil", format="png", interactive=False,
                                      elem_id="reconstruction")
            invert_cost = gr.Markdown("", elem_id="invert-cost")
            inversion_file = gr.File(label="Inversion (.safetensors, for the CLI or Python)", interactive=False,
                                     elem_id="inversion-file")
        with gr.Column():
            gr.Markdown("**Edit.** Prompt-to-prompt, the mask, the guidance and the ladder's recipes.")
            control = gr.Dropdown(controls, **from_spec("control"), label="Control", elem_id="control")
            # the mask's help line is the CLI's (FILE.png, --blend-words); the page's choices say it
            mask = gr.Radio(masks, value=cb.DEFAULT_MASK, label="Mask (where the edit may change the image)",
                            elem_id="mask-source")
            with gr.Accordion("Draw a mask (mask: drawn mask)", open=False):
                drawing = gr.ImageEditor(type="numpy", sources=(), transforms=(), layers=False,
                                         label="Paint what may change", elem_id="mask-drawing",
                                         brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"))
            with gr.Accordion("Upload a mask (mask: uploaded mask; white = may change)", open=False):
                mask_file = gr.File(label="Mask image", type="filepath", elem_id="mask-file")
            with gr.Accordion("Prompt-to-prompt and attention masks", open=False):
                reweight = gr.Textbox(label="Reweight (WORD=SCALE, ...; control: reweight)",
                                      info=setting_info("reweight").setting.help, elem_id="reweight")
                blend_words = gr.Textbox(label="Blend words for the attention mask (default: the words that differ)",
                                         info=setting_info("blend_words").setting.help, elem_id="blend-words")
                cross_steps = gr.Slider(*slider_range("cross_steps"), **from_spec("cross_steps"),
                                        label="Cross-attention steps (fraction)", elem_id="cross-steps")
                self_steps = gr.Slider(*slider_range("self_steps"), **from_spec("self_steps"),
                                       label="Self-attention steps (fraction)", elem_id="self-steps")
            with gr.Row():
                start_step = gr.Number(**from_spec("start_step"), precision=0, label="Start step", elem_id="start-step")
                edit_guidance = gr.Number(**from_spec("guidance"), label="Edit guidance", elem_id="edit-guidance")
            recipe = gr.Dropdown([LADDER_CHOICE, *rung_names()], value=LADDER_CHOICE, label="Recipe",
                                 info=setting_info("recipe").setting.help, elem_id="recipe")
            for name, info in generated.items():
                if name not in INVERSION_SETTINGS:
                    made[name] = setting_control(gr, info)
            mask_view = gr.Image(label="Mask of the last edit (tinted: allowed to change)", type="pil", format="png",
                                 interactive=False, elem_id="mask-overlay")
    return AdvancedControls(
        method=method, groups=groups, option_inputs=option_inputs, option_names=option_names, steps=steps,
        guidance=guidance, invert_button=invert_button, reconstruction=reconstruction, invert_cost=invert_cost,
        inversion_file=inversion_file, control=control, mask=mask, drawing=drawing, mask_file=mask_file,
        reweight=reweight, blend_words=blend_words, cross_steps=cross_steps, self_steps=self_steps,
        start_step=start_step, edit_guidance=edit_guidance, recipe=recipe,
        generated={name: made[name] for name in generated}, mask_view=mask_view)
