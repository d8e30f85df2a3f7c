#include "strongroom/core/kms_relay.h"
