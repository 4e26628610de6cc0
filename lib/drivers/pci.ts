// The PCI core as a driver uses it (drivers/pci): enable/disable, bus mastering, regions,
// resources, and driver registration with probe and remove against an id table.

import { livePciDevices, type PciDev } from '../devices/pci_dev';
import { W_BUS_MASTER } from '../devices/pci_state';

export const PCI_ANY_ID = 0xffffffff;

export interface pci_device_id { vendor: number; device: number }

export interface pci_driver {
  name: string;
  id_table: readonly pci_device_id[];
  /** 0 on success or a negative errno; the device is bound on 0. */
  probe(pdev: PciDev, id: pci_device_id): number;
  remove(pdev: PciDev): void;
}

const bound = new Map<PciDev, pci_driver>();
const drvdata = new WeakMap<PciDev, unknown>();

function check(fn: string, pdev: unknown): PciDev {
  if (typeof pdev !== 'object' || pdev === null || !('resources' in pdev)) throw new TypeError(`${fn}: Expected a pci_dev but received ${String(pdev)}`);
  return pdev as PciDev;
}

/** pci_name: the slot name (0000:00:03.0). */
export function pci_name(pdev: PciDev): string {
  return check('pci_name', pdev).dev.name;
}
export function pci_enable_device(pdev: PciDev): number {
  return check('pci_enable_device', pdev).alive ? 0 : -19; // -ENODEV
}
export function pci_disable_device(pdev: PciDev): void {
  const p = check('pci_disable_device', pdev);
  if (p.alive) Atomics.store(p.controlWords, W_BUS_MASTER, 0);
}
/** pci_set_master: sets PCI_COMMAND_MASTER (recorded in the device's control page). */
export function pci_set_master(pdev: PciDev): void {
  const p = check('pci_set_master', pdev);
  if (p.alive) Atomics.store(p.controlWords, W_BUS_MASTER, 1);
}
export function pci_clear_master(pdev: PciDev): void {
  pci_disable_device(pdev);
}
export function pci_request_regions(pdev: PciDev, _name: string): number {
  check('pci_request_regions', pdev);
  return 0;
}
export function pci_release_regions(pdev: PciDev): void {
  check('pci_release_regions', pdev);
}
export function pci_resource_start(pdev: PciDev, bar: number): bigint {
  return check('pci_resource_start', pdev).resources[bar]?.start ?? 0n;
}
export function pci_resource_len(pdev: PciDev, bar: number): number {
  return check('pci_resource_len', pdev).resources[bar]?.len ?? 0;
}
export function pci_set_drvdata(pdev: PciDev, data: unknown): void {
  drvdata.set(check('pci_set_drvdata', pdev), data);
}
export function pci_get_drvdata<T>(pdev: PciDev): T | undefined {
  return drvdata.get(check('pci_get_drvdata', pdev)) as T | undefined;
}

function matches(drv: pci_driver, pdev: PciDev): pci_device_id | null {
  for (const id of drv.id_table) {
    if ((id.vendor === PCI_ANY_ID || id.vendor === pdev.vendor) && (id.device === PCI_ANY_ID || id.device === pdev.device)) return id;
  }
  return null;
}

/** pci_register_driver: probes every live unbound device the id table matches. Returns 0. */
export function pci_register_driver(drv: pci_driver): number {
  if (typeof drv !== 'object' || drv === null || typeof drv.probe !== 'function' || typeof drv.remove !== 'function' || !Array.isArray(drv.id_table)) {
    throw new TypeError('pci_register_driver: Expected a pci_driver { name, id_table, probe, remove }');
  }
  for (const pdev of livePciDevices()) {
    if (bound.has(pdev) || !pdev.alive) continue;
    const id = matches(drv, pdev);
    if (id === null || drv.probe(pdev, id) !== 0) continue;
    bound.set(pdev, drv);
    // Device removal unbinds the driver first (remove() runs while the device still answers).
    pdev.teardownHooks.push(() => {
      if (bound.get(pdev) !== drv) return;
      bound.delete(pdev);
      drv.remove(pdev);
    });
  }
  return 0;
}

/** pci_unregister_driver: remove() for every device the driver is bound to. */
export function pci_unregister_driver(drv: pci_driver): void {
  for (const [pdev, d] of [...bound]) {
    if (d !== drv) continue;
    bound.delete(pdev);
    drv.remove(pdev);
  }
}

/** The driver bound to a device, or null. */
export function pci_driver_of(pdev: PciDev): pci_driver | null {
  return bound.get(check('pci_driver_of', pdev)) ?? null;
}
