"""Reading a project's labeling config: which Choices to fill, for which Image."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ElementTree

from backend.errors import ClientError

_EXAMPLE = (
    '<View><Image name="image" value="$image"/>'
    '<Choices name="choice" toName="image"><Choice value="Earth"/></Choices></View>'
)


class LabelConfigError(ClientError):
    """The labeling config cannot be used for image classification."""

    field = "label_config"


@dataclasses.dataclass(frozen=True)
class ClassificationTarget:
    """Where a prediction goes in a project: the Choices tag and its Image.

    :param from_name: the ``name`` of the ``Choices`` control.
    :param to_name: the ``name`` of the ``Image`` object it labels.
    :param data_key: the task data key that holds the image URL (``$image``
        gives ``image``).
    :param labels: the ``Choice`` values, in the config's order.
    """

    from_name: str
    to_name: str
    data_key: str
    labels: tuple[str, ...]

    def map_classes(self, classes: list[str]) -> dict[str, str]:
        """Map model classes to this config's labels.

        A class maps to the label with exactly its name, else to the one equal
        ignoring case; classes with neither are left out, so a label that is
        not in the config is never emitted.
        """
        by_folded = {}
        for label in self.labels:
            by_folded.setdefault(label.casefold(), label)
        mapping = {}
        for name in classes:
            if name in self.labels:
                mapping[name] = name
            elif name.casefold() in by_folded:
                mapping[name] = by_folded[name.casefold()]
        return mapping


def parse_label_config(xml: str) -> ClassificationTarget:
    """Find the first ``Choices`` bound to an ``Image`` in a labeling config.

    :param xml: the labeling config, as Label Studio sends it.
    :raises LabelConfigError: when the XML does not parse, or holds no
        ``Choices`` whose ``toName`` is an ``Image``; the message says what to add.
    """
    if not xml or not xml.strip():
        raise LabelConfigError(
            "The labeling config is empty. Give the project a config with an"
            f" Image and a Choices tag bound to it, for example {_EXAMPLE}"
        )
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise LabelConfigError(
            f"The labeling config is not valid XML ({exc}). Fix the XML in the"
            " project's Settings > Labeling Interface."
        ) from None
    images = {
        element.get("name"): element.get("value", "")
        for element in root.iter()
        if element.tag == "Image" and element.get("name")
    }
    for control in root.iter("Choices"):
        to_name = control.get("toName", "").split(",")[0].strip()
        if to_name not in images:
            continue
        value = images[to_name]
        labels = tuple(
            choice.get("value", choice.get("alias", ""))
            for choice in control.iter("Choice")
            if choice.get("value", choice.get("alias"))
        )
        if not labels:
            raise LabelConfigError(
                f'The Choices tag "{control.get("name")}" has no Choice values.'
                ' Add one <Choice value="..."/> per class the model predicts.'
            )
        return ClassificationTarget(
            from_name=control.get("name", ""),
            to_name=to_name,
            data_key=value[1:] if value.startswith("$") else value,
            labels=labels,
        )
    raise LabelConfigError(
        "The labeling config has no Choices tag bound to an Image, so this"
        " image classifier has nowhere to put its predictions. Add an"
        ' <Image name="image" value="$image"/> and a <Choices name="choice"'
        ' toName="image"> with one <Choice value="..."/> per class, for example'
        f" {_EXAMPLE}"
    )
