"""Routing of each variable to the Muon or the AdamW step, and its matrix view."""

import keras
import numpy as np
import pytest
from keras import layers

import kerasmuon
from reference import ADAMW
from reference import MUON
from reference import attention_input_view
from reference import attention_output_view
from reference import convolution_view
from reference import dense_view


def expected_routes(sizes):
    """Return {path: (step, matrix view)} for `mixed_model`, from its sizes.

    The view is None where the specification defines none: for variables of
    rank other than 2, 3 or 4, and for biases.
    """
    conv1d_kernel = (sizes.conv1d_width, sizes.sequence_channels, sizes.conv1d_filters)
    projection_kernel = (sizes.conv1d_filters, sizes.heads, sizes.key_dim)
    output_kernel = (sizes.heads, sizes.key_dim, sizes.conv1d_filters)
    conv2d_kernel = (
        sizes.conv2d_width,
        sizes.conv2d_width,
        sizes.image_channels,
        sizes.conv2d_filters,
    )
    # DepthwiseConv2D with depth_multiplier 1 has one output per input channel.
    depthwise_kernel = (
        sizes.depthwise_width,
        sizes.depthwise_width,
        sizes.conv2d_filters,
        1,
    )
    hidden_fan_in = sizes.conv1d_filters + sizes.conv2d_filters + sizes.embedding_dim

    routes = {
        "conv1d/kernel": (MUON, convolution_view(conv1d_kernel)),
        "conv1d/bias": (ADAMW, None),
        "attention/attention_output/kernel": (
            MUON,
            attention_output_view(output_kernel),
        ),
        "attention/attention_output/bias": (ADAMW, None),
        "norm/gamma": (ADAMW, None),
        "norm/beta": (ADAMW, None),
        "conv2d/kernel": (MUON, convolution_view(conv2d_kernel)),
        "conv2d/bias": (ADAMW, None),
        "depthwise/kernel": (ADAMW, convolution_view(depthwise_kernel)),
        "depthwise/bias": (ADAMW, None),
        "token_embedding/embeddings": (
            ADAMW,
            dense_view((sizes.vocabulary, sizes.embedding_dim)),
        ),
        "hidden/kernel": (MUON, dense_view((hidden_fan_in, sizes.hidden_units))),
        "hidden/bias": (ADAMW, None),
        "output_dense/kernel": (
            MUON,
            dense_view((sizes.hidden_units, sizes.outputs)),
        ),
        "output_dense/bias": (ADAMW, None),
    }
    for projection in ("query", "key", "value"):
        routes[f"attention/{projection}/kernel"] = (
            MUON,
            attention_input_view(projection_kernel),
        )
        # The projection biases are 2D, (heads, key_dim), but still biases.
        routes[f"attention/{projection}/bias"] = (ADAMW, None)
    return routes


def rows_by_path(model, optimizer):
    return {row["path"]: row for row in kerasmuon.routing_table(model, optimizer)}


def steps_by_path(model, optimizer):
    return {path: row["step"] for path, row in rows_by_path(model, optimizer).items()}


def test_table_lists_trainable_variables(mixed_model):
    rows = kerasmuon.routing_table(mixed_model, kerasmuon.Muon())

    assert [row["path"] for row in rows] == [
        variable.path for variable in mixed_model.trainable_variables
    ]
    for row in rows:
        assert set(row) == {"path", "shape", "matrix_view", "step", "reason"}


def test_table_shapes_match_variables(mixed_model):
    rows = rows_by_path(mixed_model, kerasmuon.Muon())

    for variable in mixed_model.trainable_variables:
        assert tuple(rows[variable.path]["shape"]) == tuple(variable.shape)


def test_table_reasons_are_text(mixed_model):
    for row in kerasmuon.routing_table(mixed_model, kerasmuon.Muon()):
        assert isinstance(row["reason"], str), row
        assert row["reason"], row


def test_default_steps_follow_rules(mixed_model, model_sizes):
    expected = expected_routes(model_sizes)
    rows = rows_by_path(mixed_model, kerasmuon.Muon())

    assert set(rows) == set(expected)
    for path, (step, _) in expected.items():
        assert rows[path]["step"] == step, path


def test_default_matrix_views(mixed_model, model_sizes):
    rows = rows_by_path(mixed_model, kerasmuon.Muon())

    for path, (_, view) in expected_routes(model_sizes).items():
        if view is not None:
            assert tuple(rows[path]["matrix_view"]) == view, path


def test_table_without_optimizer_uses_defaults(mixed_model, model_sizes):
    rows = kerasmuon.routing_table(mixed_model)
    expected = expected_routes(model_sizes)

    for row in rows:
        assert row["step"] == expected[row["path"]][0], row["path"]


def test_table_of_compiled_model_uses_its_optimizer(mixed_model):
    mixed_model.compile(
        optimizer=kerasmuon.Muon(exclude_layers="hidden"), loss="mse"
    )

    rows = {row["path"]: row for row in kerasmuon.routing_table(mixed_model)}

    assert rows["hidden/kernel"]["step"] == "adamw"
    assert rows["hidden/kernel"]["reason"] == "excluded by 'hidden'"
    assert rows["output_dense/kernel"]["step"] == "muon"


def test_table_of_model_compiled_with_adam_uses_defaults(mixed_model):
    mixed_model.compile(optimizer="adam", loss="mse")

    rows = {row["path"]: row for row in kerasmuon.routing_table(mixed_model)}

    assert rows["hidden/kernel"]["step"] == "muon"
    assert rows["output_dense/kernel"]["step"] == "muon"


def test_single_string_is_one_pattern(mixed_model, model_sizes):
    # Read character by character, "output_dense" would match nearly every
    # path, because most of them contain an "o", "u" or "t".
    steps = steps_by_path(mixed_model, kerasmuon.Muon(exclude_layers="output_dense"))
    expected = {
        path: step for path, (step, _) in expected_routes(model_sizes).items()
    }
    expected["output_dense/kernel"] = ADAMW

    assert steps == expected


def test_single_character_pattern_not_everything(mixed_model, model_sizes):
    # "z" occurs in no path of mixed_model, so the routing must not change.
    steps = steps_by_path(mixed_model, kerasmuon.Muon(exclude_layers="z"))
    expected = {
        path: step for path, (step, _) in expected_routes(model_sizes).items()
    }

    assert steps == expected


def test_pattern_is_regular_expression(mixed_model, model_sizes):
    # The alternation and the anchors only work if the string is a regular
    # expression searched in the path.
    optimizer = kerasmuon.Muon(exclude_layers="^(conv1d|hidden)/kernel$")
    steps = steps_by_path(mixed_model, optimizer)
    expected = {
        path: step for path, (step, _) in expected_routes(model_sizes).items()
    }
    expected["conv1d/kernel"] = ADAMW
    expected["hidden/kernel"] = ADAMW

    assert steps == expected


def test_several_patterns_each_apply(mixed_model, model_sizes):
    optimizer = kerasmuon.Muon(exclude_layers=["output_dense", "conv2d/", "query"])
    steps = steps_by_path(mixed_model, optimizer)
    expected = {
        path: step for path, (step, _) in expected_routes(model_sizes).items()
    }
    expected["output_dense/kernel"] = ADAMW
    expected["conv2d/kernel"] = ADAMW
    expected["attention/query/kernel"] = ADAMW

    assert steps == expected


def test_pattern_searches_anywhere_in_path(mixed_model):
    # re.search, not re.match: "put_dense" starts in the middle of the path.
    steps = steps_by_path(mixed_model, kerasmuon.Muon(exclude_layers="put_dense"))

    assert steps["output_dense/kernel"] == ADAMW
    assert steps["hidden/kernel"] == MUON


def test_exclusion_reason_names_pattern(mixed_model):
    rows = rows_by_path(mixed_model, kerasmuon.Muon(exclude_layers="output_dense"))

    assert "output_dense" in rows["output_dense/kernel"]["reason"]


@pytest.mark.parametrize("patterns", ["(", ["ok", "[unclosed"]])
def test_invalid_pattern_raises_at_construction(patterns):
    bad = patterns if isinstance(patterns, str) else patterns[-1]

    with pytest.raises(ValueError) as error:
        kerasmuon.Muon(exclude_layers=patterns)

    assert bad in str(error.value)


def embedding_named_model(sizes):
    """Build a Sequential model named "embedding_net" with an "embedding_proj" Dense."""
    return keras.Sequential(
        [
            keras.Input((sizes.tokens,), dtype="int32"),
            layers.Embedding(sizes.vocabulary, sizes.embedding_dim, name="lookup"),
            layers.Flatten(),
            layers.Dense(sizes.hidden_units, name="embedding_proj"),
        ],
        name="embedding_net",
    )


def test_embedding_in_name_keeps_muon(model_sizes):
    model = embedding_named_model(model_sizes)
    rows = {
        row["path"].split("/", 1)[1]: row
        for row in kerasmuon.routing_table(model, kerasmuon.Muon())
    }

    # Sequential puts its own name, which contains "embedding", in each path.
    assert "embedding" in rows["embedding_proj/kernel"]["path"]
    assert rows["embedding_proj/kernel"]["step"] == MUON
    assert rows["lookup/embeddings"]["step"] == ADAMW


def test_embeddings_on_muon_when_included(mixed_model, model_sizes):
    optimizer = kerasmuon.Muon(exclude_embeddings=False)
    rows = rows_by_path(mixed_model, optimizer)
    table = rows["token_embedding/embeddings"]

    assert table["step"] == MUON
    expected_view = (model_sizes.vocabulary, model_sizes.embedding_dim)
    assert tuple(table["matrix_view"]) == expected_view


def test_rank_five_kernel_uses_adamw():
    conv3d = layers.Conv3D(4, 2, name="conv3d")
    conv3d.build((None, 5, 5, 5, 3))
    scalar = keras.Variable(0.5, name="temperature")
    model_variables = [conv3d.kernel, scalar]

    optimizer = kerasmuon.Muon()
    routes = [optimizer.route(variable).step for variable in model_variables]

    assert routes == [ADAMW, ADAMW]


@pytest.mark.parametrize("multiplier, step", [(1, ADAMW), (2, MUON)])
def test_depthwise_side_of_one(multiplier, step):
    # With depth_multiplier 2 the view is (3 * 3 * 4, 2), with no side of 1.
    depthwise = layers.DepthwiseConv2D(3, depth_multiplier=multiplier, name="dw")
    depthwise.build((None, 6, 6, 4))

    route = kerasmuon.Muon().route(depthwise.kernel)

    assert route.step == step
    assert tuple(route.matrix_view) == convolution_view((3, 3, 4, multiplier))


@pytest.mark.parametrize("name", ["query", "key", "value"])
def test_conv1d_named_like_projection(name):
    # A Conv1D kernel (width, in, out) is viewed as (width * in, out) whatever
    # the layer is called. Only MultiHeadAttention's projections are
    # (d, heads * head_dim).
    conv = layers.Conv1D(6, 3, name=name)
    conv.build((None, 8, 4))

    view = kerasmuon.Muon().route(conv.kernel).matrix_view

    assert tuple(view) == convolution_view((3, 4, 6))


def test_build_creates_state_by_route(mixed_model, model_sizes, state_of):
    optimizer = kerasmuon.Muon()
    optimizer.build(mixed_model.trainable_variables)
    expected = expected_routes(model_sizes)

    for variable in mixed_model.trainable_variables:
        state = state_of(optimizer, variable)
        kinds = sorted(state)
        if expected[variable.path][0] == MUON:
            assert kinds == ["momentum"], variable.path
        else:
            assert kinds == ["momentum", "velocity"], variable.path


def test_build_state_count(mixed_model, model_sizes):
    optimizer = kerasmuon.Muon()
    optimizer.build(mixed_model.trainable_variables)
    expected = expected_routes(model_sizes)
    adamw_count = sum(1 for step, _ in expected.values() if step == ADAMW)

    # Besides the iteration counter and the learning rate, the optimizer has
    # one momentum buffer per variable and one velocity per AdamW variable.
    assert len(optimizer.variables) == 2 + len(expected) + adamw_count


def test_build_state_shapes(mixed_model, state_of):
    optimizer = kerasmuon.Muon()
    optimizer.build(mixed_model.trainable_variables)

    for variable in mixed_model.trainable_variables:
        for kind, value in state_of(optimizer, variable).items():
            assert value.shape == tuple(variable.shape), (variable.path, kind)
            assert not np.any(value), (variable.path, kind)
