#include "strongroom/core/core_service.h"
