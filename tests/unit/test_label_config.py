"""The labeling config decides where predictions go and which labels exist."""

import pytest

from backend.label_config import LabelConfigError, parse_label_config

CONFIG = """
<View>
  <Text name="caption" value="$caption"/>
  <Choices name="mood" toName="caption"><Choice value="Happy"/></Choices>
  <Image name="picture" value="$img"/>
  <Choices name="body" toName="picture" choice="single">
    <Choice value="Earth"/><Choice value="mars"/><Choice value="Comet"/>
  </Choices>
</View>
"""


def test_first_choices_on_an_image_is_the_target():
    target = parse_label_config(CONFIG)
    assert (target.from_name, target.to_name, target.data_key) == (
        "body",
        "picture",
        "img",
    )
    assert target.labels == ("Earth", "mars", "Comet")


def test_classes_map_exactly_then_ignoring_case_and_unknown_ones_are_dropped():
    target = parse_label_config(CONFIG)
    mapping = target.map_classes(["Earth", "Mars", "Jupiter"])
    assert mapping == {"Earth": "Earth", "Mars": "mars"}


def test_config_without_choices_on_an_image_says_what_to_add():
    with pytest.raises(LabelConfigError) as caught:
        parse_label_config('<View><Image name="i" value="$image"/></View>')
    assert "<Choices" in str(caught.value)
    assert 'toName="image"' in str(caught.value)


def test_invalid_xml_is_refused_with_the_parse_error():
    with pytest.raises(LabelConfigError, match="not valid XML"):
        parse_label_config("<View><Image></View>")


def test_choices_without_choice_values_is_refused():
    with pytest.raises(LabelConfigError, match="no Choice values"):
        parse_label_config(
            '<View><Image name="i" value="$image"/>'
            '<Choices name="c" toName="i"></Choices></View>'
        )
