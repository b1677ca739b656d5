from srghn.sim.plots import legend_name


def test_a_long_champion_name_keeps_its_source_and_its_regime_in_the_legend():
    compensated = "ant-s0-ada7d4-i1234-for-invert_front_left"
    label = legend_name(compensated, limit=34)
    assert len(label) == 34 and "…" in label
    assert label.startswith("ant-s0-ada7d4") and label.endswith("invert_front_left")
    assert legend_name("ant-factory-9748d570") == "ant-factory-9748d570"
