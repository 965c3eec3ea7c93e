"""The architecture as data: configuration and route validation."""

import pytest

from mesh import (ConfigError, MeshConfig, Port, Route, RouteError, RouteTable, Wavelet,
                  checkerboard_color, color_bits, external_links)


class TestMeshConfig:
    def test_defaults(self):
        config = MeshConfig()
        assert (config.width, config.height, config.colors, config.buffer_depth) == (4, 4, 8, 2)
        assert config.tiles == 16

    @pytest.mark.parametrize("kwargs, message", [
        ({"width": 0}, "width must be at least 1, not 0"),
        ({"height": 2.5}, "height must be an integer, not 2.5"),
        ({"colors": 25}, "colors must be from 1 to 24, not 25"),
        ({"buffer_depth": 0}, "buffer_depth must be from 1 to 64, not 0"),
        ({"sram_words": 100000}, "sram_words must be from 256 to 12288, not 100000"),
        ({"width": True}, "width must be an integer, not True"),
    ])
    def test_invalid(self, kwargs, message):
        with pytest.raises(ConfigError, match=message):
            MeshConfig(**kwargs)

    def test_tile_indexing_is_row_major(self):
        config = MeshConfig(width=3, height=2)
        assert config.tile_index(2, 1) == 5
        assert config.tile_xy(5) == (2, 1)
        with pytest.raises(ConfigError, match=r"tile \(3,0\) is outside the 3x2 mesh"):
            config.tile_index(3, 0)

    def test_parse_shape(self):
        assert MeshConfig.parse_shape("8x4").shape == "8x4"
        with pytest.raises(ConfigError, match="not of the form WxH"):
            MeshConfig.parse_shape("8by4")


class TestPortsAndWavelets:
    def test_opposites_and_deltas(self):
        assert [p.opposite for p in (Port.N, Port.E, Port.S, Port.W)] == \
            [Port.S, Port.W, Port.N, Port.E]
        assert Port.E.delta == (1, 0) and Port.N.delta == (0, -1)
        with pytest.raises(ValueError, match="RAMP port has no opposite"):
            Port.RAMP.opposite

    def test_parse(self):
        assert Port.parse("ramp") is Port.RAMP and Port.parse(2) is Port.S
        with pytest.raises(ValueError, match="unknown port 'X'"):
            Port.parse("X")

    def test_color_bits(self):
        assert [color_bits(c) for c in (1, 2, 3, 8, 9, 24)] == [1, 1, 2, 3, 4, 5]

    def test_wavelet_packing_puts_data_low(self):
        wavelet = Wavelet(color=5, data=0xDEADBEEF)
        assert wavelet.pack() == (5 << 32) | 0xDEADBEEF
        assert Wavelet.unpack(wavelet.pack()) == wavelet
        with pytest.raises(ValueError, match="not a 32-bit unsigned value"):
            Wavelet(color=0, data=-1)

    def test_external_link_order(self):
        links = external_links(MeshConfig(width=3, height=2))
        assert len(links) == 3 * 2 + 2 * 3 + 2 * 2
        assert [(l.x, l.y, l.port) for l in links[:2]] == [(0, 0, Port.RAMP), (1, 0, Port.RAMP)]
        assert (links[6].x, links[6].y, links[6].port) == (0, 0, Port.N)
        assert (links[9].x, links[9].y, links[9].port) == (2, 0, Port.E)
        assert links[-1].port is Port.W and links[-1].y == 1
        assert links[4].rtl_name("in") == "ramp_in[1][1]"
        assert links[9].rtl_name("out") == "east_out[0]"


class TestRouteSet:
    config = MeshConfig(width=4, height=3, colors=4)

    def test_route_masks(self):
        table = RouteTable(self.config).set(1, 1, 2, inputs=["W", "N"], outputs=["E", "RAMP"])
        route = table.get(1, 1, 2)
        assert route == Route(frozenset({Port.W, Port.N}), frozenset({Port.E, Port.RAMP}))
        assert route.accept_mask == 0b01001 and route.output_mask == 0b10010
        accept, output = table.masks()
        assert accept[self.config.tile_index(1, 1)][2] == 0b01001

    @pytest.mark.parametrize("args, message", [
        ((4, 0, 0), r"tile \(4,0\) is outside the 4x3 mesh"),
        ((0, 0, 4), r"tile \(0,0\): color 4 is out of range: this mesh has colors 0..3"),
    ])
    def test_out_of_range(self, args, message):
        with pytest.raises(RouteError, match=message):
            RouteTable(self.config).set(*args, inputs="RAMP", outputs="E")

    def test_no_input(self):
        with pytest.raises(RouteError, match=r"tile \(0,0\) color 1: .* accepts no input port"):
            RouteTable(self.config).set(0, 0, 1, inputs=[], outputs="E")

    def test_no_output(self):
        with pytest.raises(RouteError, match=r"tile \(0,0\) color 1: .* has no output port"):
            RouteTable(self.config).set(0, 0, 1, inputs="RAMP", outputs=[])

    def test_bad_port_name(self):
        with pytest.raises(RouteError, match=r"tile \(0,0\) color 1: bad output port"):
            RouteTable(self.config).set(0, 0, 1, inputs="RAMP", outputs="UP")

    def test_overwrite_needs_replace(self):
        table = RouteTable(self.config).set(0, 0, 1, inputs="RAMP", outputs="E")
        table.set(0, 0, 1, inputs="RAMP", outputs="E")  # the same route again is fine
        with pytest.raises(RouteError, match="already routed"):
            table.set(0, 0, 1, inputs="RAMP", outputs="S")
        table.set(0, 0, 1, inputs="RAMP", outputs="S", replace=True)
        assert table.get(0, 0, 1).outputs == {Port.S}

    def test_off_mesh_output_needs_an_open_edge(self):
        table = RouteTable(self.config).set(3, 0, 0, inputs="RAMP", outputs="E")
        with pytest.raises(RouteError, match=r"tile \(3,0\) color 0: output E leaves the mesh"):
            table.validate()
        table.open_edge(3, 0, "E").validate()

    def test_off_mesh_input_needs_an_open_edge(self):
        table = RouteTable(self.config).set(0, 2, 3, inputs="S", outputs="RAMP")
        with pytest.raises(RouteError, match=r"tile \(0,2\) color 3: accepts input S from outside"):
            table.validate()
        table.open_edge(0, 2, "S").validate()

    def test_open_edge_must_be_an_edge(self):
        with pytest.raises(RouteError, match=r"tile \(1,1\) port E is not an edge link"):
            RouteTable(self.config).open_edge(1, 1, "E")

    def test_neighbour_must_accept(self):
        table = RouteTable(self.config).set(0, 0, 0, inputs="RAMP", outputs="E")
        table.set(1, 0, 0, inputs="N", outputs="RAMP")
        with pytest.raises(RouteError, match=r"tile \(0,0\) color 0: sends E to tile \(1,0\), "
                                             r"which does not accept color 0 from W"):
            table.validate()

    def test_all_problems_reported_at_once(self):
        table = RouteTable(self.config).set(0, 0, 0, inputs="RAMP", outputs=["E", "N"])
        with pytest.raises(RouteError, match=r"2 problem\(s\)"):
            table.validate()

    def test_loop_is_refused(self):
        table = RouteTable(self.config)
        table.set(0, 0, 1, inputs=["S", "RAMP"], outputs="E")
        table.set(1, 0, 1, inputs="W", outputs="S")
        table.set(1, 1, 1, inputs="N", outputs="W")
        table.set(0, 1, 1, inputs="E", outputs="N")
        with pytest.raises(RouteError, match=r"color 1: routes form a loop that would never "
                                             r"drain: \(0,0\) -> \(1,0\) -> \(1,1\) -> \(0,1\)"):
            table.validate()

    def test_multicast_branch_into_loop_is_refused(self):
        table = RouteTable(self.config)
        table.set(0, 0, 2, inputs=["RAMP", "E"], outputs=["E", "RAMP"])
        table.set(1, 0, 2, inputs="W", outputs=["W", "RAMP"])
        with pytest.raises(RouteError, match=r"color 2: routes form a loop"):
            table.validate()


class TestRouteHelpers:
    config = MeshConfig(width=4, height=4, colors=8)

    def test_chain(self):
        table = RouteTable(self.config).chain(0, [(0, 0), (1, 0), (1, 1)])
        assert str(table.get(0, 0, 0)) == "{RAMP} -> {E}"
        assert str(table.get(1, 0, 0)) == "{W} -> {S}"
        assert str(table.get(1, 1, 0)) == "{N} -> {RAMP}"
        table.validate()

    def test_chain_to_the_edge_opens_it(self):
        table = RouteTable(self.config).chain(0, [(x, 0) for x in range(4)], sink="E")
        assert (3, 0, Port.E) in table.open_edges
        table.validate()

    def test_chain_must_be_adjacent(self):
        with pytest.raises(RouteError, match=r"chain step \(0,0\) -> \(2,0\) is not between"):
            RouteTable(self.config).chain(0, [(0, 0), (2, 0)])

    def test_row_multicast(self):
        table = RouteTable(self.config).row_multicast(3, 1, source_x=1).validate()
        assert str(table.get(1, 1, 3)) == "{RAMP} -> {E,W}"
        assert str(table.get(0, 1, 3)) == "{E} -> {RAMP}"
        assert str(table.get(2, 1, 3)) == "{W} -> {E,RAMP}"
        assert str(table.get(3, 1, 3)) == "{W} -> {RAMP}"

    def test_column_multicast_from_the_top(self):
        table = RouteTable(self.config).column_multicast(4, 2, source_y=0).validate()
        assert str(table.get(2, 0, 4)) == "{RAMP} -> {S}"
        assert str(table.get(2, 3, 4)) == "{N} -> {RAMP}"

    def test_row_reduce_chain_alternates_colors(self):
        table = RouteTable(self.config).row_reduce_chain(2, (5, 6)).validate()
        assert checkerboard_color(0, 2, 5, 6) == 5
        assert str(table.get(0, 2, 5)) == "{RAMP} -> {E}"
        assert str(table.get(1, 2, 5)) == "{W} -> {RAMP}"
        assert str(table.get(1, 2, 6)) == "{RAMP} -> {E}"
        assert str(table.get(3, 2, 5)) == "{W} -> {RAMP}"

    def test_column_reduce_chain_north(self):
        RouteTable(self.config).column_reduce_chain(0, (1, 2), toward="N").validate()
        with pytest.raises(RouteError, match="a column reduction runs S or N, not E"):
            RouteTable(self.config).column_reduce_chain(0, (1, 2), toward="E")
