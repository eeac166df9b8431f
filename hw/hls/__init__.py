"""HLS C++ backend: the IR as Vitis-HLS-style C++ with a bit-exact g++ C simulation.

`emit.emit_hls(ir, out_dir)` writes the sources; `csim` compiles them with g++ against
the ap_types headers that hls4ml ships and compares every output with the golden model;
`hls4ml_project` writes an hls4ml project for the models hls4ml can express.
No torch here.
"""
