// Double-precision oracles of every kernel and policy (tests and checks).
#pragma once

#include "reference/attention.hpp"
