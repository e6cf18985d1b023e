"""Tierwise on Kubernetes: the cluster's settings, the RayService manifest model, and the renderer."""
