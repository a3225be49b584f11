"""ptychodus product HDF5 round trip."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from data_helpers import small_scan

from ptycho_k3.data import DataError
from ptycho_k3.data.ptychodus import load_ptychodus_product, save_ptychodus_product


def test_round_trip(tmp_path):
    s = small_scan(m=9)
    path = save_ptychodus_product(tmp_path / "p.h5", s, name="demo", loss_values=[3.0, 2.0])
    with h5py.File(path, "r") as f:
        for key in ("probe_position_indexes", "probe_position_x_m", "probe_position_y_m",
                    "probe", "object", "object_layer_spacing_m", "loss_values", "loss_epochs",
                    "raw_data/diffraction"):
            assert key in f
        assert f["probe"].dtype == np.complex64
        np.testing.assert_allclose(f["probe_position_x_m"][()], s.xcoords * 5e-8)
        assert f.attrs["name"] == "demo" and f.attrs["probe_photon_count"] == 1e6
    prod = load_ptychodus_product(path)
    np.testing.assert_allclose(prod.xcoords, s.xcoords, rtol=1e-12)
    np.testing.assert_allclose(prod.ycoords, s.ycoords, rtol=1e-12)
    np.testing.assert_array_equal(prod.probe, s.probe)
    np.testing.assert_array_equal(prod.object, s.object)
    np.testing.assert_array_equal(prod.loss_values, [3.0, 2.0])
    back = prod.to_scan_data()
    np.testing.assert_array_equal(back.diffraction, s.diffraction)
    np.testing.assert_array_equal(back.scan_index, s.scan_index)


def test_without_raw_and_errors(tmp_path):
    s = small_scan(m=4)
    path = save_ptychodus_product(tmp_path / "p.h5", s, include_raw=False)
    prod = load_ptychodus_product(path)
    assert prod.diffraction is None
    with pytest.raises(DataError, match="raw_data"):
        prod.to_scan_data()
    with pytest.raises(DataError, match="file not found"):
        load_ptychodus_product(tmp_path / "none.h5")
    (tmp_path / "junk.h5").write_text("junk")
    with pytest.raises(DataError, match="not a readable HDF5"):
        load_ptychodus_product(tmp_path / "junk.h5")
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with pytest.raises(DataError, match="missing dataset 'object'"):
        load_ptychodus_product(tmp_path / "empty.h5")
