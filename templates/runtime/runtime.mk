# The device runtime's sources for a template's Makefile:
#   UTVM_RUNTIME_DIR := path/to/runtime
#   include $(UTVM_RUNTIME_DIR)/runtime.mk
#   CFLAGS += $(addprefix -I,$(UTVM_RUNTIME_INCLUDES))
# A port (e.g. $(UTVM_RUNTIME_POSIX_SRCS)) and the model sources come on top.
# runtime_files.json holds the same lists for Python.
UTVM_RUNTIME_SRCS := \
	$(UTVM_RUNTIME_DIR)/src/backend.c \
	$(UTVM_RUNTIME_DIR)/src/commands.c \
	$(UTVM_RUNTIME_DIR)/src/crc16.c \
	$(UTVM_RUNTIME_DIR)/src/escape.c \
	$(UTVM_RUNTIME_DIR)/src/framing.c \
	$(UTVM_RUNTIME_DIR)/src/plan.c \
	$(UTVM_RUNTIME_DIR)/src/session.c
UTVM_RUNTIME_INCLUDES := $(UTVM_RUNTIME_DIR)/include
UTVM_RUNTIME_POSIX_SRCS := \
	$(UTVM_RUNTIME_DIR)/ports/posix/port_posix.c \
	$(UTVM_RUNTIME_DIR)/ports/posix/main_posix.c
UTVM_RUNTIME_POSIX_INCLUDES := $(UTVM_RUNTIME_DIR)/ports/posix
# The MLPerf Tiny runner's device side (project type mlperftiny): add a generated
# utvm_mlperf_config.h on the include path.
UTVM_RUNTIME_MLPERFTINY_SRCS := $(UTVM_RUNTIME_DIR)/apps/mlperftiny/mlperftiny.c
UTVM_RUNTIME_MLPERFTINY_INCLUDES := $(UTVM_RUNTIME_DIR)/apps/mlperftiny
