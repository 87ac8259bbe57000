"""A labelled set of past incidents and the questions that should find them, generated from a seed.

Each `Case` is one problem on one kind of asset with one kind of fix (pump /
bearing wear / lubrication starvation -> regrease). Incidents are written the
way technicians close work orders (shorthand, readings, parts); queries the way
someone describes a new situation (plain words, other synonyms, other sentence
structure). The two vocabularies are written separately, and `shared_ngrams`
checks that no query repeats a 5-word run of any incident.

A query's right answers are the incidents of its case: the same problem on the
same asset type, fixed the same way (for instrumentation faults, on any asset
type: a dead RTD is fixed the same way on a pump and on a motor). A coarser
label, the failure mode on the asset type, is reported alongside.

The asset types, their sensors (with units and failure thresholds) and the
failure modes come from the built-in registry; a few modes that the simulator
does not inject (pump cavitation and seal leaks, motor supply faults, conveyor
belt tracking, false alarms) are added because a real maintenance history has them.
"""

from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from importlib import resources

from smart_maintenance.operators.incidents import Incident


@dataclass(frozen=True)
class Case:
    key: str
    asset_types: tuple[str, ...]  # one type; several for instrumentation faults
    failure_mode: str  # "" for false alarms
    sensors: dict[str, tuple[str, ...]] | tuple[str, ...]  # per asset type, or the same for all
    outcome: str
    seen: tuple[str, ...]  # how incidents describe the situation ({sensor} placeholder)
    fixes: tuple[str, ...]
    parts: tuple[str, ...]
    asks: tuple[str, ...]  # how queries describe it ({asset}, {sensor} placeholders)

    def sensors_for(self, asset_type: str) -> tuple[str, ...]:
        return self.sensors[asset_type] if isinstance(self.sensors, dict) else self.sensors

    @property
    def mode_label(self) -> str:
        return self.failure_mode or "false_alarm"


@dataclass(frozen=True)
class Query:
    text: str
    asset_type: str
    sensors: tuple[str, ...]
    case: str
    relevant: frozenset[str]  # incident ids of the same case (and asset type unless instrumentation)
    relevant_mode: frozenset[str]  # incident ids with the same failure mode on the same asset type


INSTRUMENTS = ("pump", "compressor", "motor", "conveyor")

CASES: tuple[Case, ...] = (
    # ------------------------------------------------------------------ pump
    Case("pump/bearing_wear/lubrication", ("pump",), "bearing_wear", ("vibration", "temperature"), "repaired",
         seen=("DE bearing running hot and growling, grease nipple dry, no fresh grease at the seal",
               "high bearing temperature on drive end, lube point found empty, bearing noisy",
               "bearing housing hot to the touch, auto-lubricator cartridge empty for weeks",
               "noisy bearings, grease in housing hard and discoloured, temperature rising steadily"),
         fixes=("regreased DE and NDE bearings with correct grease, replaced empty auto-lubricator",
                "flushed old hardened grease and repacked bearings, lube interval shortened to 500 hours",
                "fitted new single-point lubricator and greased bearings, added lube task to the route"),
         parts=("grease cartridge LGHP2", "single-point lubricator", "grease nipple"),
         asks=("{asset} is squealing at the shaft end and the housing is getting very warm, I don't think "
               "anyone has greased it in ages",
               "grinding sound from the drive side of {asset}, the lubricator looks like it ran out",
               "{asset} overheating at the bearings, what did we do last time lubrication was missed",
               "screech from {asset} that gets worse as it warms up, greaser dry")),
    Case("pump/bearing_wear/spalled", ("pump",), "bearing_wear", ("vibration", "temperature"), "replaced",
         seen=("vib spectrum shows BPFO harmonics, outer race defect on DE bearing, vib trending up over 3 weeks",
               "rumbling from pump end, bearing rough when shaft turned by hand, vibration 8 mm/s overall",
               "impacting in time waveform, bearing cage damage suspected, high vibration on bearing housing",
               "bearing failing: metallic knocking, vibration doubled since last route"),
         fixes=("replaced DE and NDE bearings, checked shaft and housing fits, realigned coupling",
                "changed out spalled bearing, new bearing isolators fitted",
                "bearing replacement both ends, found pitting on outer race of old bearing"),
         parts=("bearing 6310-2Z/C3", "bearing 6308-2Z", "bearing isolator"),
         asks=("envelope analysis on {asset} points to a damaged race, overall levels climbing each week",
               "{asset} shaking more and more, when we spin the shaft it feels gritty",
               "clicking and knocking from inside {asset}, amplitude way up compared to the last survey",
               "worn-out rolling element on {asset}? the shaking has been creeping up for a month")),
    Case("pump/impeller_wear/erosion", ("pump",), "impeller_wear", ("pressure", "flow"), "replaced",
         seen=("discharge pressure down to 4.2 bar, flow well under duty point, impeller vanes eroded",
               "pump not making head, performance test shows 20% loss, wear ring clearance excessive",
               "gradual decline in flow and pressure over months, abrasive slurry service, impeller worn",
               "low discharge press and low flow, impeller found thin at vane tips on inspection"),
         fixes=("pulled rotating element, replaced impeller and wear rings, set clearances to spec",
                "fitted new hardened impeller and case wear ring",
                "replaced eroded impeller, casing inspected OK"),
         parts=("impeller", "wear ring set", "casing gasket"),
         asks=("{asset} can't reach its rated head anymore, output has tapered off slowly since spring",
               "outlet pressure sagging and throughput down on {asset}, probably internal wear from the grit",
               "{asset} is delivering less and less every month, what got swapped last time",
               "{asset} losing hydraulic performance, is the gap between rotor and casing too big?")),
    Case("pump/impeller_wear/clogged", ("pump",), "impeller_wear", ("pressure", "flow"), "repaired",
         seen=("flow dropped suddenly, discharge pressure low, rags wrapped around impeller eye",
               "impeller blocked with debris after tank cleaning, pump running but barely moving product",
               "sudden loss of flow, found plastic and fibres jammed in impeller passages",
               "pressure and flow fell off in one shift, suction strainer and impeller choked"),
         fixes=("opened casing, cleared rags from impeller and cleaned suction strainer",
                "removed debris from impeller and volute, flushed line, put strainer back",
                "de-ragged impeller, recommended basket strainer upstream"),
         parts=("casing gasket", "strainer basket"),
         asks=("{asset} throughput collapsed all of a sudden, feels like something is stuck inside",
               "after the vessel cleanout {asset} barely pumps, maybe junk got sucked in",
               "{asset} spinning but hardly any liquid coming out, happened abruptly this morning",
               "could {asset} be choked with trash? output went away within a few hours")),
    Case("pump/cavitation/suction", ("pump",), "cavitation", ("pressure", "vibration"), "adjusted",
         seen=("crackling gravel noise from casing, discharge pressure fluctuating, low suction level in tank",
               "cavitating: NPSH available too low, suction valve found half closed",
               "pressure unstable and noisy, suction strainer partly blocked causing cavitation",
               "pump sounds like pumping stones, vibration erratic, inlet pressure low"),
         fixes=("opened suction valve fully, cleaned strainer, raised minimum tank level setpoint",
                "cleared suction strainer, adjusted level control so pump keeps NPSH margin",
                "corrected suction line-up, trimmed discharge valve to bring pump back on curve"),
         parts=(),
         asks=("{asset} makes a noise like marbles rattling and the discharge gauge needle keeps jumping",
               "popping and rattling on the inlet side of {asset}, output unsteady",
               "{asset} gets loud whenever the tank runs low, pressure swinging",
               "bubbles collapsing in {asset}? loud crackle and it shakes all over the place")),
    Case("pump/seal_leak/mech_seal", ("pump",), "seal_leak", ("temperature",), "replaced",
         seen=("mechanical seal leaking, product dripping from gland area, seal faces worn",
               "seal leak at stuffing box, steady drip, bearing temp up slightly",
               "leakage along shaft, seal flush line blocked, seal running dry and hot",
               "found puddle under pump, mech seal failed"),
         fixes=("replaced mechanical seal cartridge, cleared seal flush line",
                "installed new seal kit, checked shaft sleeve for scoring",
                "changed mech seal and O-rings, flushed seal water supply"),
         parts=("mechanical seal cartridge", "O-ring kit", "shaft sleeve"),
         asks=("{asset} weeping fluid where the shaft leaves the casing, wet floor under the coupling guard",
               "liquid spraying out around the rotating shaft of {asset}",
               "{asset} leaking at the shaft, which sealing part did we fit before",
               "drips running down the casing of {asset} close to the spindle")),
    Case("pump/false_alarm/process", ("pump",), "", ("vibration", "temperature"), "no_fault_found",
         seen=("vibration alarm during valve line-up change, checked on site, all normal",
               "alarm while operators were swapping duty and standby pumps, nothing found",
               "high temp flagged at startup, settled within 20 min, no defect found",
               "transient spike when process flow changed, inspection found nothing wrong"),
         fixes=("no fault found, readings back to normal once process settled",
                "inspected and tested, no fault, closed work order",
                "NFF, asked ops to log valve moves so alarms can be matched"),
         parts=(),
         asks=("{asset} alarm came in while the crew was switching lines, it looked fine when we arrived",
               "{asset} flagged during start-up but nothing wrong by the time we checked",
               "short blip on {asset} right after the flow was changed, is that normal",
               "{asset} set off the alert for a few minutes during a process change and recovered on its own")),
    # ------------------------------------------------------------------ compressor
    Case("compressor/valve_leak/broken_valve", ("compressor",), "valve_leak", ("discharge_pressure", "discharge_temp"),
         "replaced",
         seen=("discharge temp high, discharge pressure not building, 2nd stage valve plate cracked",
               "broken discharge valve reed, compressor loading slow, head running hot",
               "ticking noise from cylinder head, delivery valve leaking back, high outlet temp",
               "valve failure on stage 1, pressure ratio low, temp over 120C"),
         fixes=("replaced discharge valve assembly on stage 2",
                "fitted new valve plates and springs, torqued valve covers",
                "changed leaking delivery valve, checked suction valves OK"),
         parts=("discharge valve assembly", "valve plate kit", "valve springs"),
         asks=("{asset} outlet runs very hot and it struggles to reach pressure, there's a tapping from the head",
               "air leaving {asset} is way hotter than usual and the receiver fills slowly",
               "{asset} takes ages to pump up the tank and the delivery pipe is scorching",
               "something clacking in the top end of {asset}, output weak")),
    Case("compressor/valve_leak/carbon", ("compressor",), "valve_leak", ("discharge_pressure", "discharge_temp"),
         "repaired",
         seen=("valves coked with carbon, poor seating, discharge pressure low",
               "heavy carbon deposits on valve seats, discharge temperature creeping up",
               "valve plates sticky with oil varnish, compressor efficiency down",
               "carbon buildup found at valve inspection, leaking past seats"),
         fixes=("removed valves, decarbonised and lapped seats, refitted with new gaskets",
                "cleaned valve assemblies in solvent, replaced gaskets, reduced oil feed rate",
                "decoked valves and ports, changed to synthetic compressor oil"),
         parts=("valve cover gasket", "synthetic compressor oil"),
         asks=("{asset} loads up slowly, valves look gummed with black gunk",
               "sooty residue all over the valve seats of {asset} and the delivery air keeps getting hotter",
               "{asset} not sealing properly at the valves because of deposits, how did we clean them before",
               "varnish and soot in the head of {asset}, output falling")),
    Case("compressor/valve_leak/unloader", ("compressor",), "valve_leak", ("discharge_pressure", "current"),
         "repaired",
         seen=("compressor not loading, unloader solenoid stuck open, pressure stays at 5 bar",
               "unloader valve sticking, machine runs unloaded, discharge pressure low",
               "load/unload cycling wrong, unloader piston seized",
               "inlet valve not opening on load command, compressor idling"),
         fixes=("replaced unloader solenoid coil and cleaned unloader valve",
                "rebuilt inlet and unloader valve with service kit",
                "freed seized unloader piston, new O-rings, tested load/unload"),
         parts=("unloader solenoid", "inlet valve service kit", "O-ring kit"),
         asks=("{asset} runs but never builds up pressure, it seems to stay in idle",
               "{asset} doesn't switch over to load, just hums along at low pressure",
               "load command sent but {asset} won't pick up, output stuck low",
               "{asset} is idling constantly instead of loading")),
    Case("compressor/oil_degradation/old_oil", ("compressor",), "oil_degradation", ("oil_temp", "vibration"),
         "repaired",
         seen=("oil temp 95C, oil dark and smells burnt, oil change overdue by 2000 hours",
               "oil oxidised and sludgy, high oil temperature, filter diff pressure high",
               "lube oil degraded per sample report (high TAN), oil temp trending up",
               "oil black, varnish on sight glass, temperature alarm"),
         fixes=("drained and flushed sump, changed oil and oil filter",
                "oil change with new separator and filter, reset service counter",
                "full oil service, sample sent to lab, interval cut to 4000 hours"),
         parts=("compressor oil 20 L", "oil filter", "separator element"),
         asks=("lubricant in {asset} has gone black and stinks of burning, and it's running hotter than normal",
               "the lab analysis came back bad for {asset}, acid number high",
               "{asset} overdue for service, lube looks thick and dirty, temps up",
               "{asset} lube looks like tar and the level window is stained brown")),
    Case("compressor/oil_degradation/cooler", ("compressor",), "oil_degradation", ("oil_temp",), "repaired",
         seen=("oil temp creeping up on hot days, oil cooler fins clogged with dust",
               "cooler core blocked, oil temperature high, cooling fan OK",
               "high oil temp, found cooler matted with lint and oil mist",
               "thermal valve OK, oil cooler fouled on air side"),
         fixes=("cleaned oil cooler core with compressed air and degreaser",
                "washed cooler fins, fitted intake filter mat to room vent",
                "removed and cleaned oil cooler, added cooler cleaning to monthly PM"),
         parts=("cooler filter mat",),
         asks=("{asset} lube overheats every afternoon in summer, the radiator looks caked in grime",
               "heat exchanger on {asset} full of dirt and the lubricant keeps getting too warm",
               "{asset} hits its high oil temperature limit when the room is hot, fins choked",
               "airflow through the radiator of {asset} blocked by fluff, lube too hot")),
    Case("compressor/oil_degradation/water", ("compressor",), "oil_degradation", ("oil_temp",), "repaired",
         seen=("oil milky, water contamination, condensate drain blocked",
               "emulsified oil in sump, separator drain not working",
               "oil sample shows high moisture, oil looks cloudy, running in cold humid conditions",
               "white foamy oil, drain valve stuck closed"),
         fixes=("changed oil and separator, cleared and replaced condensate drain valve",
                "replaced auto drain, flushed oil system, raised minimum running temp",
                "new oil fill, fixed blocked drain line"),
         parts=("condensate drain valve", "compressor oil 20 L", "separator element"),
         asks=("the lube in {asset} turned cloudy like milk, I think moisture is getting in",
               "{asset} lubricant looks creamy and frothy through the level window",
               "water in the lubricant of {asset}? it's gone pale",
               "{asset} auto drain doesn't seem to discharge and the lube went whitish")),
    # ------------------------------------------------------------------ motor
    Case("motor/insulation_breakdown/moisture", ("motor",), "insulation_breakdown", ("winding_temp", "current"),
         "repaired",
         seen=("IR test 2 MOhm, winding temp high, motor stood idle in damp area",
               "low insulation resistance after washdown, stator temp elevated",
               "megger reading low on all phases, condensation inside terminal box",
               "moisture ingress into windings, anti-condensation heater not energised"),
         fixes=("dried out windings with heater and hot air, IR back to 500 MOhm, restored space heater supply",
                "baked stator dry, resealed terminal box gland",
                "dried motor, fixed anti-condensation heater circuit"),
         parts=("terminal box gland", "heater fuse"),
         asks=("{asset} megger result is very poor after the wet week, stator heating up",
               "{asset} sat unused in humid weather and now fails the insulation check",
               "water got into the coils of {asset}? resistance to earth dropped",
               "{asset} tests bad to ground after the hose-down")),
    Case("motor/insulation_breakdown/burnt", ("motor",), "insulation_breakdown", ("winding_temp", "current"),
         "replaced",
         seen=("stator winding burnt, smell of burnt varnish, phase current imbalance, IR near zero",
               "winding failure, motor tripped on overload, turn-to-turn short",
               "motor tripped, stator insulation broken down, ground fault on phase W",
               "overheated winding, discoloured coils visible, high current"),
         fixes=("motor sent out for rewind, installed spare motor from stores",
                "replaced motor with spare, failed unit to rewind shop",
                "swapped motor, rewind quote requested"),
         parts=("spare motor 75 kW", "terminal lugs"),
         asks=("{asset} tripped on overcurrent and there's a smell like scorched lacquer",
               "one phase on {asset} draws far more amps and the stator looks cooked",
               "{asset} earth fault, do we have a spare unit to put in",
               "{asset} coils look brown and charred, breaker keeps kicking out")),
    Case("motor/insulation_breakdown/cooling", ("motor",), "insulation_breakdown", ("winding_temp",), "repaired",
         seen=("winding temp alarm, fan cowl blocked with dust, cooling fins dirty",
               "motor running hot, cooling fan broken, blades missing",
               "high winding temperature, motor frame covered in product dust",
               "fan cover intake choked with fibres, stator temp over 130C"),
         fixes=("cleaned fan cover and cooling fins, checked fan",
                "replaced broken cooling fan, cleaned frame",
                "blew out cooling passages, added cowl cleaning to weekly route"),
         parts=("cooling fan", "fan cover"),
         asks=("{asset} stator keeps getting hotter, the air intake at the back is packed with lint",
               "{asset} runs warm and the housing is buried in powder, not much air moving",
               "impeller on the non-drive end of {asset} looks damaged, heat climbing",
               "{asset} overheating, ventilation grille clogged")),
    Case("motor/misalignment/coupling", ("motor",), "misalignment", ("vibration", "current"), "adjusted",
         seen=("high axial vib at 2x running speed, coupling offset 0.4 mm",
               "misalignment after pump overhaul, vibration high on motor DE",
               "angular misalignment measured with dial gauge, coupling hot",
               "vibration increased after motor was swapped, not aligned"),
         fixes=("laser aligned motor to driven unit, shimmed feet, vib back to 1.2 mm/s",
                "realigned coupling within 0.05 mm, recorded alignment report",
                "corrected alignment, checked coupling gap"),
         parts=("shim kit",),
         asks=("{asset} shakes mostly along the shaft axis with a strong twice-per-rev peak",
               "since the driven machine was reinstalled, {asset} vibrates badly at the coupling end",
               "shafts of {asset} and its load don't line up",
               "{asset}: 2x component dominant, probably an offset between shafts")),
    Case("motor/misalignment/soft_foot", ("motor",), "misalignment", ("vibration",), "repaired",
         seen=("vib high, hold-down bolts loose, soft foot on NDE foot",
               "baseplate bolts backed off, motor rocking, vibration up",
               "soft foot 0.3 mm found, vibration at 1x high",
               "motor feet loose on frame, cracked grout under base"),
         fixes=("corrected soft foot with shims, torqued base bolts",
                "re-grouted base, new anchor bolts, torqued",
                "tightened hold-down bolts with thread lock, checked soft foot"),
         parts=("anchor bolts", "shim kit"),
         asks=("{asset} rocks on its frame, one of the mounting legs isn't sitting flat",
               "fixing screws of {asset} came undone and it's rattling",
               "{asset} moves on its plinth when it starts, anchor nuts slack",
               "the mounting of {asset} is not solid, shaking at running speed")),
    Case("motor/misalignment/coupling_element", ("motor",), "misalignment", ("vibration",), "replaced",
         seen=("coupling spider worn, rubber dust under guard, vib up",
               "coupling insert disintegrated, knocking on start",
               "flexible element of coupling cracked, backlash in coupling",
               "jaw coupling elastomer worn out, vibration and noise"),
         fixes=("replaced coupling insert and spider, rechecked alignment",
                "new flexible coupling element fitted",
                "changed coupling spider and hub set screws"),
         parts=("coupling spider", "coupling element"),
         asks=("black rubber powder under the guard of {asset}, clunks when starting",
               "{asset} has play between the shaft halves, bangs on startup",
               "the elastic part joining {asset} to its load looks chewed up",
               "{asset} knocks at start, flex insert perished")),
    Case("motor/supply_fault/phase", ("motor",), "supply_fault", ("current", "voltage", "speed"), "repaired",
         seen=("current unbalanced, one phase fuse blown, speed dropping",
               "single phasing, loose terminal on phase L2, motor humming",
               "voltage dip on supply, motor speed low, high current",
               "burnt contactor tip, phase missing, motor overheating"),
         fixes=("replaced blown fuse, tightened terminal connections",
                "replaced contactor, checked phase voltages balanced",
                "remade burnt cable lug, thermographic check OK"),
         parts=("fuse 63 A", "contactor", "cable lug"),
         asks=("{asset} humming and slowing down, I think it lost a phase",
               "amps on {asset} uneven between the three lines and it won't come up to speed",
               "{asset} drops rpm and the feeder volts look low",
               "starter for {asset} has a scorched contact, buzzing")),
    # ------------------------------------------------------------------ conveyor
    Case("conveyor/belt_slip/tension", ("conveyor",), "belt_slip", ("belt_speed", "motor_current"), "adjusted",
         seen=("belt slipping on head pulley, belt speed drops under load, take-up at end of travel",
               "low belt tension, gravity take-up stuck, slip at start-up",
               "belt stretched, screw take-up fully extended, slip under full load",
               "belt speed sagging when loaded, counterweight jammed"),
         fixes=("re-tensioned belt via take-up, cut out section and re-spliced",
                "freed take-up carriage, tension restored",
                "shortened belt by vulcanised splice, reset take-up to mid travel"),
         parts=("splice kit",),
         asks=("{asset} loses speed whenever it's loaded, the tensioner has no adjustment left",
               "{asset} belt too slack, the weight box seems stuck",
               "belt on {asset} has grown longer and skids when starting full",
               "{asset} slows under heavy feed, not tight enough")),
    Case("conveyor/belt_slip/lagging", ("conveyor",), "belt_slip", ("belt_speed", "motor_current"), "repaired",
         seen=("drive pulley lagging worn smooth, belt slip, squealing",
               "lagging delaminated on head drum, slip under load",
               "rubber lagging worn through to steel on drive pulley",
               "pulley lagging glazed, belt slipping intermittently"),
         fixes=("re-lagged drive pulley with ceramic lagging",
                "replaced drive pulley with re-lagged spare",
                "cold-bonded new lagging to head pulley"),
         parts=("ceramic lagging", "pulley lagging adhesive"),
         asks=("the head drum rubber on {asset} is polished bald and the belt squeals and skids",
               "{asset} drive drum covering peeling off, belt not gripping",
               "bare metal showing on the driving roller of {asset}",
               "{asset} belt shrieks at the head end, drum surface worn")),
    Case("conveyor/belt_slip/carryback", ("conveyor",), "belt_slip", ("belt_speed",), "repaired",
         seen=("material carryback and water on pulley, belt slipping, scraper worn",
               "belt cleaner blade worn out, mud built up on drive pulley",
               "sticky fines caking pulley face, belt slip after rain",
               "primary scraper missing, wet material on return belt"),
         fixes=("replaced primary belt scraper blade, cleaned pulley",
                "new belt cleaner installed and tensioned, pulley washed",
                "fitted secondary scraper, cleared buildup"),
         parts=("scraper blade", "belt cleaner"),
         asks=("{asset} slips after washdown, wet muck building up on the drive drum, wiper blade worn down",
               "sticky ore stuck to the head roller of {asset} and the belt won't grip",
               "{asset} belt skidding in the rain, lots of spillage underneath on the way back",
               "cleaner on {asset} not doing its job, crust on the drum")),
    Case("conveyor/bearing_wear/idler", ("conveyor",), "bearing_wear", ("bearing_temp", "vibration"), "replaced",
         seen=("return idler seized, squealing, flat spot worn on idler shell",
               "carry idler bearings collapsed, idler not turning, hot",
               "several idlers seized in loading zone, belt cover damaged",
               "idler roll locked up, high bearing temp on the idler frame"),
         fixes=("replaced 3 seized idlers",
                "changed idler set in loading zone, checked belt cover",
                "swapped out seized rollers, added idler inspection to weekly route"),
         parts=("idler roller", "impact idler"),
         asks=("one of the rollers under {asset} isn't turning, it squeals and gets hot",
               "{asset} has a stuck roller rubbing the belt",
               "carrying rollers on {asset} frozen near the loading chute",
               "{asset}: shrieking roller, belt dragging over it")),
    Case("conveyor/bearing_wear/pulley_bearing", ("conveyor",), "bearing_wear", ("bearing_temp", "vibration"),
         "replaced",
         seen=("tail pulley plummer block bearing hot 85C, vib high, grease contaminated with dust",
               "head pulley bearing noisy, housing seals failed, dust ingress",
               "pulley bearing temperature rising, spherical roller bearing damaged",
               "drive pulley bearing growling, labyrinth seal worn"),
         fixes=("replaced tail pulley bearing and seals, regreased",
                "new spherical roller bearing and housing seals on head pulley",
                "replaced plummer block assembly"),
         parts=("spherical roller bearing 22216", "plummer block housing", "housing seals"),
         asks=("the pillow block at the tail end of {asset} is hot and rumbling, dirt got into the housing",
               "{asset} end drum bearing overheating, sealing looks shot",
               "housing on the drive drum of {asset} growls and runs warm",
               "{asset} drum bearing getting hot, grit in the lubricant")),
    Case("conveyor/belt_mistracking/training", ("conveyor",), "belt_mistracking", ("motor_current", "vibration"),
         "adjusted",
         seen=("belt running off to one side, edge damage, training idlers seized",
               "mistracking, belt rubbing structure, tail pulley not square",
               "belt wandering, material buildup on return idlers",
               "belt edge frayed, tracking off by 80 mm"),
         fixes=("adjusted training idlers, squared tail pulley",
                "cleaned return idlers, retrained belt",
                "installed self-aligning idler, trimmed frayed edge"),
         parts=("self-aligning idler",),
         asks=("{asset} belt drifting to the left and its edge is shredding on the frame",
               "belt on {asset} creeps sideways and rubs the steelwork",
               "{asset} not running centred, one edge wearing",
               "belt of {asset} walks off the rollers to one side")),
    # ------------------------------------------------------------------ instrumentation (any asset type)
    Case("sensor/vibration_cable", INSTRUMENTS, "sensor_fault", ("vibration",), "repaired",
         seen=("{sensor} reading spiking randomly, accelerometer cable damaged",
               "erratic {sensor} signal, sensor connector loose, machine fine on handheld check",
               "{sensor} signal noisy, cable shield not grounded",
               "accelerometer magnet mount loose, spurious {sensor} readings"),
         fixes=("replaced accelerometer cable, resecured connector",
                "re-terminated shield at panel end only",
                "stud-mounted accelerometer, replaced magnet base"),
         parts=("accelerometer cable", "M12 connector", "accelerometer"),
         asks=("{sensor} on {asset} jumps all over the place but the machine sounds fine, wiring suspect",
               "{asset} {sensor} trend is full of random spikes, portable meter says normal",
               "bogus {sensor} values from {asset}, the probe might be loose",
               "the {sensor} signal of {asset} looks like noise, not the machine")),
    Case("sensor/temperature_rtd", INSTRUMENTS, "sensor_fault",
         {"pump": ("temperature",), "compressor": ("oil_temp",), "motor": ("winding_temp",),
          "conveyor": ("bearing_temp",)}, "replaced",
         seen=("{sensor} reading frozen at same value for hours, RTD open circuit",
               "{sensor} flatlined, PT100 element failed",
               "{sensor} stuck, transmitter output fixed at 20 mA",
               "{sensor} not changing with load, RTD wiring broken in terminal box"),
         fixes=("replaced PT100 RTD element",
                "replaced temperature transmitter and checked loop",
                "repaired RTD wiring in junction box"),
         parts=("PT100 RTD", "temperature transmitter"),
         asks=("{sensor} on {asset} hasn't moved for hours, flat line in the trend",
               "{asset} {sensor} shows the same number all day even under load",
               "is the {sensor} probe on {asset} dead? value constant",
               "{sensor} trace for {asset} stuck, clearly not real")),
    Case("sensor/pressure_drift", ("pump", "compressor"), "sensor_fault",
         {"pump": ("pressure",), "compressor": ("discharge_pressure",)}, "adjusted",
         seen=("{sensor} transmitter reads 1.5 bar low vs local gauge, drifted",
               "{sensor} offset, calibration out, process fine",
               "{sensor} signal drifting over weeks, impulse line partially blocked",
               "{sensor} transmitter zero shift after freezing night"),
         fixes=("recalibrated transmitter, zero and span adjusted",
                "blew down impulse line, recalibrated",
                "replaced pressure transmitter"),
         parts=("pressure transmitter",),
         asks=("{sensor} on SCADA for {asset} doesn't match the dial on the pipe, off by a bar or so",
               "{asset} {sensor} value looks wrong compared to the local indicator",
               "{sensor} on {asset} slowly wandering though the process is steady",
               "instrument error on {asset} {sensor}, machine behaving normally")),
    Case("sensor/dropout", INSTRUMENTS, "sensor_fault",
         {"pump": ("flow",), "compressor": ("current",), "motor": ("speed",), "conveyor": ("load",)}, "repaired",
         seen=("{sensor} readings dropping out, gaps in data, remote IO card fault",
               "intermittent loss of {sensor} signal, fieldbus comms errors",
               "{sensor} data missing for minutes at a time, gateway rebooting",
               "no data from {sensor}, network switch port flapping"),
         fixes=("replaced IO module, comms restored",
                "replaced faulty gateway power supply",
                "replaced patch cable and switch port"),
         parts=("remote IO module", "gateway PSU", "patch cable"),
         asks=("values from {asset} keep going missing, holes in the {sensor} trend every few minutes",
               "{asset} {sensor} disappears off the screen now and then",
               "we lose the {sensor} signal from {asset} intermittently, network issue?",
               "{asset} shows blank periods in the historian for {sensor}")),
    Case("sensor/current_transducer", INSTRUMENTS, "sensor_fault",
         {"pump": ("current",), "compressor": ("current",), "motor": ("current",), "conveyor": ("motor_current",)},
         "repaired",
         seen=("{sensor} reads 0 A while running, CT secondary wiring open",
               "{sensor} out of range, current transducer failed",
               "{sensor} value stuck at max scale, CT burden wrong",
               "{sensor} signal lost, loose terminal at CT"),
         fixes=("reconnected CT secondary, tightened terminals",
                "replaced current transducer",
                "corrected CT ratio setting in meter"),
         parts=("current transducer",),
         asks=("{asset} shows zero amps even though it's clearly running",
               "{asset} {sensor} indication pegged at full scale, can't be right",
               "amp reading on {asset} is nonsense, the machine is fine",
               "{asset} {sensor} value makes no sense next to the clamp meter")),
    Case("sensor/speed_pickup", ("motor", "conveyor"), "sensor_fault",
         {"motor": ("speed",), "conveyor": ("belt_speed",)}, "adjusted",
         seen=("{sensor} reads 0 while running, proximity pickup gap too large",
               "{sensor} erratic, target wheel dirty",
               "{sensor} signal lost, encoder cable cut",
               "{sensor} pickup misaligned after maintenance"),
         fixes=("readjusted pickup gap to 2 mm",
                "cleaned target and pickup",
                "replaced encoder cable"),
         parts=("proximity sensor", "encoder cable"),
         asks=("{asset} {sensor} says stopped but it's clearly moving",
               "{asset} {sensor} jumps around while running steady",
               "rpm indication on {asset} is gone",
               "{sensor} measurement on {asset} unreliable since the last job")),
)

OPENERS = ("", "", "Ops reported ", "Operator called in: ", "PdM route: ", "Alarm raised - ", "Found on walkdown: ",
           "Night shift: ", "CM alert, ", "Follow-up on alarm: ")
FOLLOW_UPS = ("", "", "Ran up and checked, all readings back in band.", "Monitored for 2 hrs after restart, OK.",
              "Returned to service.", "Trend to be watched at next PM.", "Handed back to ops at shift change.",
              "Tested under load, fine.")
SHORTHAND = {"bearing": "brg", "bearings": "brgs", "vibration": "vib", "temperature": "temp", "replaced": "repl",
             "pressure": "press", "and": "&", "with": "w/", "compressor": "comp", "motor": "mtr", "hours": "hrs"}
ASSET_REFS = {
    "pump": ("pump 7", "P-07", "the cooling water pump", "feed pump B", "P-112", "the transfer pump on line 2",
             "booster pump 3"),
    "compressor": ("compressor 2", "C-201", "the instrument air compressor", "air comp B",
                   "the screw compressor in the utility room", "K-104"),
    "motor": ("motor 5", "M-12", "the fan motor", "the agitator drive", "the 75 kW motor on the mixer",
              "drive motor 3"),
    "conveyor": ("conveyor 4", "CV-03", "the transfer belt", "the stacker conveyor", "belt 2",
                 "the overland conveyor"),
}
QUERY_PREFIXES = ("", "", "", "any history on this? ", "what fixed it last time: ", "seen this before? ")
SITES = ("north", "south", "east", "west")


def registry() -> dict:
    """The built-in registry's asset types (sensors with units and thresholds, failure modes)."""
    text = resources.files("smart_maintenance.config").joinpath("default_registry.toml").read_text()
    return tomllib.loads(text)["asset_types"]


def _words(name: str) -> str:
    return name.replace("_", " ")


def _abnormal(spec: dict, rng: random.Random) -> float:
    lo, hi = spec["normal"]
    fail = spec["failure"]
    if spec.get("failure_direction") == "below":
        return rng.uniform(fail * 1.05, lo * 0.9)
    return rng.uniform(hi * 1.2, fail * 0.95)


def _reading(sensor: str, spec: dict, rng: random.Random) -> str:
    v = _abnormal(spec, rng)
    value = f"{v:.1f}" if v < 100 else f"{v:.0f}"
    name = SHORTHAND.get(sensor, _words(sensor))
    return rng.choice((f" ({name} {value} {spec['unit']})", f", {_words(sensor)} at {value} {spec['unit']}",
                       f" - {name} {value}{spec['unit']}"))


def _shorthand(text: str) -> str:
    return re.sub(r"\b(\w+)\b", lambda m: SHORTHAND.get(m.group(1), m.group(1)), text)


def alarm_sensors(typical: tuple[str, ...], all_sensors: list[str], rng: random.Random) -> tuple[str, ...]:
    """The sensors an alarm names: not always all of the problem's typical ones, sometimes a bystander too."""
    kept = [s for i, s in enumerate(typical) if rng.random() < (0.9 if i == 0 else 0.7)] or [typical[0]]
    others = [s for s in all_sensors if s not in typical]
    if others and rng.random() < 0.25:
        kept.append(rng.choice(others))
    return tuple(kept)


def _incident(case: Case, asset_type: str, n: int, rng: random.Random, types: dict) -> Incident:
    typical = case.sensors_for(asset_type)
    sensor = typical[0]
    sensors = alarm_sensors(typical, list(types[asset_type]["sensors"]), rng)
    seen = rng.choice(case.seen).format(sensor=_words(sensor))
    symptoms = rng.choice(OPENERS) + seen
    if "{sensor}" not in case.seen[0] and rng.random() < 0.6:  # machine faults: a reading of the leading sensor
        s = rng.choice(typical)
        symptoms += _reading(s, types[asset_type]["sensors"][s], rng)
    resolution = rng.choice(case.fixes) + "."
    follow = rng.choice(FOLLOW_UPS)
    if follow:
        resolution += " " + follow
    if case.parts and rng.random() < 0.8:
        resolution += " Parts: " + ", ".join(rng.sample(case.parts, rng.randint(1, len(case.parts)))) + "."
    if rng.random() < 0.35:
        symptoms, resolution = _shorthand(symptoms), _shorthand(resolution)
    closed = datetime(2023, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=rng.randrange(3 * 365 * 24 * 60))
    opened = closed - timedelta(minutes=rng.randrange(60, 5 * 24 * 60))
    return Incident(
        incident_id=f"{case.key}#{n}",
        asset_id=f"{asset_type}-{rng.randint(1, 12):02d}",
        asset_type=asset_type,
        site=rng.choice(SITES),
        sensors=sensors,
        failure_mode=case.failure_mode if rng.random() < 0.5 else "",  # CMMS failure codes are often blank
        symptoms=symptoms,
        resolution=resolution,
        outcome=case.outcome,
        opened_at=opened.isoformat(),
        closed_at=closed.isoformat(),
        work_order_id=f"WO-{rng.randint(10000, 99999)}",
    )


def build(seed: int = 7, per_case: tuple[int, int] = (6, 8)) -> tuple[list[Incident], list[Query], dict[str, str]]:
    """Incidents, queries, and each incident's case key; the same seed gives the same set."""
    rng = random.Random(seed)
    types = registry()
    incidents: list[Incident] = []
    case_of: dict[str, str] = {}
    for case in CASES:
        for n in range(rng.randint(*per_case)):
            asset_type = case.asset_types[n % len(case.asset_types)]  # instrumentation: every type gets some
            inc = _incident(case, asset_type, n, rng, types)
            incidents.append(inc)
            case_of[inc.incident_id] = case.key
    by_id = {i.incident_id: i for i in incidents}
    cases = {c.key: c for c in CASES}
    queries: list[Query] = []
    for case in CASES:
        for i, ask in enumerate(case.asks):
            asset_type = case.asset_types[(i + 1) % len(case.asset_types)]
            typical = case.sensors_for(asset_type)
            sensors = alarm_sensors(typical, list(types[asset_type]["sensors"]), rng)
            text = rng.choice(QUERY_PREFIXES) + ask.format(asset=rng.choice(ASSET_REFS[asset_type]),
                                                          sensor=_words(typical[0]))
            instrumentation = len(case.asset_types) > 1
            relevant = frozenset(k for k, c in case_of.items() if c == case.key
                                 and (instrumentation or by_id[k].asset_type == asset_type))
            mode = frozenset(k for k, c in case_of.items() if cases[c].mode_label == case.mode_label
                             and (instrumentation or by_id[k].asset_type == asset_type))
            queries.append(Query(text, asset_type, sensors, case.key, relevant, mode))
    return incidents, queries, case_of


def _grams(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def shared_ngrams(incidents: list[Incident], queries: list[Query], n: int = 5) -> list[tuple[str, str]]:
    """(query, incident id) pairs where the query repeats an n-word run of the incident's text."""
    grams = {i.incident_id: _grams(f"{i.symptoms} {i.resolution}", n) for i in incidents}
    return [(q.text, iid) for q in queries for iid, g in grams.items() if _grams(q.text, n) & g]
