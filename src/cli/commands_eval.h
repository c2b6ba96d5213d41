// vortex gsm-inf … — GSM-Infinite problem generation (registered by main.cpp).
#pragma once

#include <CLI/CLI.hpp>

namespace vortex::cli {

void add_gsm_commands(CLI::App& app);  // gsm-inf symbolic

}  // namespace vortex::cli
