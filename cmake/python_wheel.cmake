# The `inferenceutils` Python package as a small pure-Python wheel, for use outside the launcher
# (a notebook, a web server started by another tool): `pip install
# <prefix>/share/inferenceutils/inferenceutils-<version>-py3-none-any.whl` (docs/python.md).
# Inside the launcher the same package is imported from <prefix>/share/inferenceutils/python.
#
# Build tree: ${CMAKE_BINARY_DIR}/wheel/<wheel>, bound to this build tree's bin/inferenceutils.
# Install: built again at install time, bound to the install prefix's bin/inferenceutils.
file(GLOB_RECURSE IU_PYTHON_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/assets/python/inferenceutils/*.py)
set(IU_WHEEL_NAME inferenceutils-${PROJECT_VERSION}-py3-none-any.whl)
set(IU_WHEEL_SCRIPT ${CMAKE_SOURCE_DIR}/scripts/make-wheel.py)
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/wheel/${IU_WHEEL_NAME}
  COMMAND ${Python3_EXECUTABLE} ${IU_WHEEL_SCRIPT} --source ${CMAKE_SOURCE_DIR}/assets/python/inferenceutils
          --version ${PROJECT_VERSION} --prefix ${CMAKE_BINARY_DIR} --out ${CMAKE_BINARY_DIR}/wheel
  DEPENDS ${IU_PYTHON_SOURCES} ${IU_WHEEL_SCRIPT}
  COMMENT "Building the inferenceutils wheel"
  VERBATIM)
add_custom_target(inferenceutils_wheel ALL DEPENDS ${CMAKE_BINARY_DIR}/wheel/${IU_WHEEL_NAME})

install(CODE "
  set(_iu_prefix \"\${CMAKE_INSTALL_PREFIX}\")
  set(_iu_out \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/share/inferenceutils\")
  message(STATUS \"Installing: \${_iu_out}/${IU_WHEEL_NAME}\")
  execute_process(COMMAND \"${Python3_EXECUTABLE}\" \"${IU_WHEEL_SCRIPT}\"
                          --source \"${CMAKE_SOURCE_DIR}/assets/python/inferenceutils\"
                          --version \"${PROJECT_VERSION}\" --prefix \"\${_iu_prefix}\" --out \"\${_iu_out}\"
                  RESULT_VARIABLE _iu_rc)
  if(NOT _iu_rc EQUAL 0)
    message(FATAL_ERROR \"building the inferenceutils wheel failed\")
  endif()
")
