// Stand-in for the CUDA runtime header in the emulation build (see ../emulation.h).
#pragma once
#include "../emulation.h"
