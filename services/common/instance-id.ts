/**
 * What an instance ID may look like: `UB_ARJgkJ` is what we make, and any short token of these
 * characters is accepted, so older or foreign IDs still work. It names the bridge's MQTT user and
 * a mesh advert's origin alike.
 */
export const INSTANCE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/
