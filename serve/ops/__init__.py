"""Operations: the KubeRay renderer and Serve's ingress made private to one Ray instance."""
