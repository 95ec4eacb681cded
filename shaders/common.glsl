// Shared declarations for every compute shader.
#ifndef COMMON_GLSL
#define COMMON_GLSL

#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable

// Workgroup size along x, set per pipeline by specialization constant 0 (the host sizes it from device limits).
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

#endif
