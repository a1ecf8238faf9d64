// Runtime layer umbrella: executors (serial, thread pool, your own pool) and
// per-thread aligned scratch.
#pragma once

#include "runtime/executor.hpp"
#include "runtime/scratch.hpp"
