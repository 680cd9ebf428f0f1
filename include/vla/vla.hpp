// vla/vla.hpp — everything in vla that needs no CUDA.
#pragma once

#include "vla/backend/backend.hpp"
#include "vla/backend/cpu.hpp"
#include "vla/backward.hpp"
#include "vla/baselines.hpp"
#include "vla/chunked.hpp"
#include "vla/config.hpp"
#include "vla/diagnostics.hpp"
#include "vla/feature_map.hpp"
#include "vla/jacobian.hpp"
#include "vla/layout.hpp"
#include "vla/penalty_inverse.hpp"
#include "vla/rows.hpp"
#include "vla/state.hpp"
#include "vla/time_split.hpp"
