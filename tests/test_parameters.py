import pytest

from workbench.runs.parameters import ParameterError, parse_parameters, read_parameters, \
    resolve_parameters
from conftest import FIXTURES

SOURCE = '''
model = "mlp"  # reference model (one of: mlp, mixer, gpt)
width = 64  # hidden width
lr = 1e-3
amp = True  # mixed precision on GPU
extra = None  # anything
sizes = [1, 2]
'''


def test_parse_types_help_and_choices():
    params = parse_parameters(SOURCE)
    assert list(params) == ["model", "width", "lr", "amp", "extra", "sizes"]
    assert params["model"].choices == ("mlp", "mixer", "gpt")
    assert params["width"].help == "hidden width"
    assert [p.type_name for p in params.values()] == ["str", "int", "float", "bool", "any", "list"]


@pytest.mark.parametrize("given, expected", [
    ({"width": "128"}, {"width": 128}),
    ({"lr": "3e-4"}, {"lr": 3e-4}),
    ({"lr": "2"}, {"lr": 2.0}),
    ({"amp": "false"}, {"amp": False}),
    ({"extra": "12"}, {"extra": 12}),
    ({"extra": "hello"}, {"extra": "hello"}),
    ({"sizes": "[3, 4]"}, {"sizes": [3, 4]}),
    ({"model": "gpt"}, {"model": "gpt"}),
    ({"width": 7}, {"width": 7}),
])
def test_values_are_converted(given, expected):
    values = resolve_parameters(parse_parameters(SOURCE), given)
    for key, value in expected.items():
        assert values[key] == value and type(values[key]) is type(value)


@pytest.mark.parametrize("given, match", [
    ({"widht": "3"}, "unknown parameter 'widht'"),
    ({"width": "wide"}, "'width' expects int"),
    ({"width": "1.5"}, "'width' expects int"),
    ({"lr": "fast"}, "'lr' expects float"),
    ({"amp": "maybe"}, "'amp' expects bool"),
    ({"sizes": "3"}, "'sizes' expects list"),
    ({"model": "resnet"}, "'model' must be one of mlp, mixer, gpt"),
    ({"width": 1.5}, "'width' expects int"),
])
def test_bad_values_name_the_parameter(given, match):
    with pytest.raises(ParameterError, match=match):
        resolve_parameters(parse_parameters(SOURCE), given)


def test_read_from_notebook_and_missing_cell(tmp_path):
    params = read_parameters(FIXTURES / "tiny.ipynb")
    assert params["mode"].choices == ("fast", "slow") and params["x"].default == 1
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(nb, tmp_path / "untagged.ipynb")
    with pytest.raises(ParameterError, match="no code cell tagged 'parameters'"):
        read_parameters(tmp_path / "untagged.ipynb")
    with pytest.raises(FileNotFoundError):
        read_parameters(tmp_path / "missing.ipynb")
